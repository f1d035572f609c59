//! Clients not written here, from PyPI, through `rampart proxy` pooling by transaction
//! (`proxy.pool_mode: transaction`), against a real PostgreSQL 15 and etcd: each runs a workload
//! once against PostgreSQL directly and once through the proxy, and prints the same lines both
//! times, while the proxy serves its clients with fewer server connections than they are.
//! * psycopg 3 with `prepare_threshold=0`, so every statement is prepared on the server from
//!   its first execution: four connections in turn set `application_name` and `TimeZone` and
//!   see their own, run parameterised SELECT/INSERT/UPDATE many times, commit transactions
//!   (savepoints too), hit errors outside them, executemany, pipelines (one failing), statements
//!   closed when psycopg evicts them from its cache; and, in a test of its own, rolling back,
//!   errors in transactions and a failing executemany, after each of which psycopg sends
//!   `DEALLOCATE ALL` and prepares its statements again;
//! * asyncpg (which prepares and describes every statement): a pool of six connections runs
//!   tasks at once with fetch/fetchval/execute, `conn.prepare()` statements reused, transactions
//!   (savepoints, isolation levels, a cursor), errors in a transaction, executemany, COPY of
//!   records, its statement cache evicting; the pool resets each connection it takes back.
//!
//! The workloads are Python scripts under `tests/fixtures/`, run with the venv
//! `scripts/setup.sh` installs (`/opt/rampart-venv`, psycopg 3 and asyncpg).

mod support;

use support::proxy::{cluster_and_pool, server_connections, APP_USER};
use support::python::run_script;

/// Server connections in the proxy's pool: fewer than the clients of either script.
const POOL_SIZE: usize = 3;

/// Runs `script` with `steps` directly and then through a transaction-mode proxy whose pool has
/// [`POOL_SIZE`] server connections, and asserts that both print the same lines and that the
/// proxy kept to its pool.
fn same_through_the_proxy(script: &str, steps: &[&str]) {
    let (_c, proxy, pg) = cluster_and_pool(POOL_SIZE, "");
    let direct = run_script(script, pg, steps);
    assert!(direct.len() > 2, "{script} printed almost nothing directly: {direct:?}");
    let broken: Vec<&String> = direct.iter().filter(|l| l.contains("\"what\": \"unexpected\"")).collect();
    assert!(broken.is_empty(), "{script} fails even directly: {broken:?}");
    let pooled = run_script(script, proxy.rw_port, steps);
    if let Some((i, (d, p))) = direct.iter().zip(&pooled).enumerate().find(|(_, (d, p))| d != p) {
        panic!("{script}: line {} differs through the proxy\n directly: {d}\n    proxy: {p}", i + 1);
    }
    assert_eq!(direct.len(), pooled.len(), "{script}: as many lines through the proxy\n{pooled:#?}");
    let servers = server_connections(pg, APP_USER);
    assert!(
        (1..=POOL_SIZE as i64).contains(&servers),
        "{servers} server connections for the app user, in a pool of {POOL_SIZE}"
    );
}

#[test]
fn psycopg3_with_server_side_prepared_statements_gets_the_same_results_through_the_pool() {
    same_through_the_proxy(
        "proxy_clients_psycopg.py",
        &["settings", "dml", "transactions", "errors", "executemany", "pipeline", "pipeline_error", "evictions"],
    );
}

/// Rollbacks: of a transaction block, of a savepoint, `ROLLBACK` as a statement, an error in a
/// transaction (then ROLLBACK and the connection reused), executemany failing in a transaction.
/// After each, psycopg sends `DEALLOCATE ALL` (as PgBouncer 1.22+ supports) and prepares its
/// statements again: between transactions the proxy answers it itself; on a server it drops every
/// statement prepared there, other clients' too, and the proxy prepares them again when next used.
#[test]
fn psycopg3_rolling_back_gets_the_same_results_through_the_pool() {
    same_through_the_proxy("proxy_clients_psycopg.py", &["rollbacks", "errors_in_transactions", "executemany_error"]);
}

#[test]
fn asyncpg_gets_the_same_results_through_the_pool() {
    same_through_the_proxy("proxy_clients_asyncpg.py", &[]);
}
