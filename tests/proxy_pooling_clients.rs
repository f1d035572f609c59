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

use std::path::Path;
use std::process::Command;

use support::proxy::{cluster_and_pool, server_connections, APP_PASSWORD, APP_USER};

/// The venv's Python, with psycopg 3 and asyncpg.
const PYTHON: &str = "/opt/rampart-venv/bin/python";
/// Server connections in the proxy's pool: fewer than the clients of either script.
const POOL_SIZE: usize = 3;

/// Runs the fixture `script` with `steps` (none: all of them) against `127.0.0.1:port` as the
/// app user: its output lines. Fails the test if it does not exit 0 within two minutes.
fn run_script(script: &str, port: u16, steps: &[&str]) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(script);
    assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: run scripts/setup.sh");
    // `timeout` (a child of the test, stopped with it) ends a client stuck on a proxy that
    // never answers.
    let out = Command::new("timeout")
        .args(["-k", "5", "120", PYTHON])
        .arg(&path)
        .args(steps)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", APP_USER)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGDATABASE", "postgres")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {PYTHON} {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} {steps:?} on port {port} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

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
