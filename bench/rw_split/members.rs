//! Where the statements of a run were served, from each member's own statistics: every statement
//! of the bench's workloads reads or updates one row of `pgbench_accounts` by its primary key,
//! which counts one index scan in that member's `pg_stat_user_tables` (a replica counts the
//! scans it serves too), and an update counts one updated row (`n_tup_upd`) on the primary. So a
//! member's reads in a run are its `idx_scan` delta less its `n_tup_upd` delta, and the writes are
//! the primary's `n_tup_upd` delta. The primary's WAL position is read with them: how much WAL a
//! run wrote.
//!
//! PostgreSQL 15 keeps these counters in shared memory, but a backend hands its own to them at
//! most once a second while busy, and an idle one 10 s after its last statement at the latest
//! (`PGSTAT_IDLE_INTERVAL`): a pooler's server connections sit idle after a run, holding up to
//! their last second of counts. [`FLUSH_WAIT`] after each run lets them all arrive before the
//! counters are read, so that no run's statements are counted in the next one's.

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::support;

/// Longer than PostgreSQL's `PGSTAT_IDLE_INTERVAL` (10 s).
pub const FLUSH_WAIT: Duration = Duration::from_millis(10_500);

/// One member's counters on `pgbench_accounts`, and the primary's WAL position (0 on a replica).
#[derive(Clone, Copy, Default)]
pub struct Counters {
    idx_scan: i64,
    n_tup_upd: i64,
    wal: i64,
}

/// Statements one member served in a run (or in several).
#[derive(Clone, Copy, Default)]
pub struct Served {
    pub reads: u64,
    pub writes: u64,
}

impl Served {
    pub fn add(&mut self, other: Served) {
        self.reads += other.reads;
        self.writes += other.writes;
    }
}

/// The counters of the members on `ports`, in that order.
pub fn read(rt: &Runtime, ports: &[u16]) -> Result<Vec<Counters>, String> {
    rt.block_on(async {
        let mut out = Vec::with_capacity(ports.len());
        for &port in ports {
            let db = support::connect_superuser(port).await.map_err(|e| format!("connect to {port}: {e}"))?;
            let row = db
                .query_one(
                    "SELECT coalesce(idx_scan, 0), n_tup_upd, CASE WHEN pg_is_in_recovery() THEN 0 \
                     ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END \
                     FROM pg_stat_user_tables WHERE relname = 'pgbench_accounts'",
                    &[],
                )
                .await
                .map_err(|e| format!("pg_stat_user_tables on {port}: {e}"))?;
            out.push(Counters { idx_scan: row.get(0), n_tup_upd: row.get(1), wal: row.get(2) });
        }
        Ok(out)
    })
}

/// What each member served between `before` and `after`.
pub fn served(before: &[Counters], after: &[Counters]) -> Vec<Served> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let writes = (a.n_tup_upd - b.n_tup_upd).max(0);
            let scans = (a.idx_scan - b.idx_scan).max(0);
            Served { reads: (scans - writes).max(0) as u64, writes: writes as u64 }
        })
        .collect()
}

/// The WAL the primary wrote between `before` and `after`, in bytes.
pub fn wal_bytes(before: &[Counters], after: &[Counters]) -> u64 {
    before.iter().zip(after).map(|(b, a)| (a.wal - b.wal).max(0) as u64).sum()
}
