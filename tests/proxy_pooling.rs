//! Stories of `rampart proxy` pooling by transaction (`proxy.pool_mode: transaction`), against a
//! real PostgreSQL 15 and etcd:
//! * pgbench in its three query modes (simple, extended, prepared) and its TPC-B script runs
//!   through a pool of a few server connections with no failed transaction, many clients
//!   sharing those few servers;
//! * 2,000 pgbench clients, connected at once, are served by a pool of 20 server connections;
//! * the proxy authenticates clients itself: with SCRAM against verifiers it reads by
//!   `auth_query` (logging in to PostgreSQL with the client's key), and a wrong password or an
//!   unknown user gets PostgreSQL's FATAL 28P01 without the proxy opening a server connection.

mod support;

use std::process::{Command, Output};

use support::proxy::{cluster_and_pool, cluster_and_pool_app_in_auth_file, server_connections, APP_PASSWORD, APP_USER};

/// Runs `cmd`, returning its output whatever its status; the shown command never holds the
/// password (it comes from the environment).
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{} {:?}", cmd.get_program().to_string_lossy(), cmd.get_args().collect::<Vec<_>>());
    cmd.output().unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

/// pgbench as `user` through `port`: its whole report, and whether it succeeded. It runs under
/// `sh` so that `ulimit -n` can give it a socket for each of thousands of clients.
fn pgbench(port: u16, user: &str, password: &str, args: &[&str]) -> (bool, String) {
    let out = run(Command::new("sh")
        .args(["-c", "ulimit -n 8192 && exec \"$0\" \"$@\""])
        .arg(support::pg_bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10"));
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

/// The number after `label` in a pgbench report.
fn report_number(report: &str, label: &str) -> f64 {
    let line =
        report.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {report}"));
    let value = line.split_once('=').or_else(|| line.split_once(':')).map(|(_, v)| v).unwrap_or_default();
    // "3200/3200" for transactions processed with -t: the first number is what was done.
    let first = value.split_whitespace().next().and_then(|v| v.split('/').next());
    first.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{label}: {line}"))
}

/// psql through `port` as `user`: stdout, or the error text when it failed.
fn psql(port: u16, user: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = run(Command::new(support::pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn pgbench_in_every_query_mode_runs_through_a_few_pooled_server_connections() {
    let (_c, proxy, pg) = cluster_and_pool(4, "");
    let (ok, init) = pgbench(pg, support::SUPERUSER, support::SUPERUSER_PASSWORD, &["-i", "-s", "1", "-q"]);
    assert!(ok, "pgbench -i directly: {init}");
    for mode in ["simple", "extended", "prepared"] {
        let (ok, report) = pgbench(
            proxy.rw_port,
            APP_USER,
            APP_PASSWORD,
            &["-S", "-M", mode, "-c", "16", "-j", "2", "-t", "200", "-n"],
        );
        assert!(ok, "pgbench -S -M {mode} through the pool: {report}");
        assert_eq!(report_number(&report, "number of transactions actually processed"), 3200.0, "{report}");
        assert_eq!(report_number(&report, "number of failed transactions"), 0.0, "{report}");
    }
    let (ok, report) =
        pgbench(proxy.rw_port, APP_USER, APP_PASSWORD, &["-M", "prepared", "-c", "8", "-j", "2", "-t", "100", "-n"]);
    assert!(ok, "TPC-B through the pool: {report}");
    assert_eq!(report_number(&report, "number of failed transactions"), 0.0, "{report}");
    // Sixteen clients, four server connections at most.
    let servers = server_connections(pg, APP_USER);
    assert!((1..=4).contains(&servers), "{servers} server connections for 16 clients in a pool of 4");
}

#[test]
fn two_thousand_pgbench_clients_are_served_by_twenty_server_connections() {
    // The app user's verifier in the auth_file: with auth_query, each of the 2,000 logins would
    // open a connection of its own to look it up (minutes in a debug build).
    let (_c, proxy, pg) = cluster_and_pool_app_in_auth_file(20, "  max_client_conn: 2500\n");
    let (ok, init) = pgbench(pg, support::SUPERUSER, support::SUPERUSER_PASSWORD, &["-i", "-s", "1", "-q"]);
    assert!(ok, "pgbench -i directly: {init}");
    // Each client connects once and runs its five transactions; all 2,000 are connected at once.
    let (ok, report) =
        pgbench(proxy.rw_port, APP_USER, APP_PASSWORD, &["-S", "-c", "2000", "-j", "2", "-t", "5", "-n"]);
    assert!(ok, "2,000 pgbench clients through a pool of 20: {report}");
    assert_eq!(report_number(&report, "number of transactions actually processed"), 10_000.0, "{report}");
    assert_eq!(report_number(&report, "number of failed transactions"), 0.0, "{report}");
    let servers = server_connections(pg, APP_USER);
    assert!((1..=20).contains(&servers), "{servers} server connections for 2,000 clients in a pool of 20");
}

#[test]
fn the_proxy_authenticates_clients_itself() {
    let (_c, proxy, pg) = cluster_and_pool(4, "");
    assert_eq!(psql(proxy.rw_port, APP_USER, APP_PASSWORD, "SELECT current_user").unwrap(), APP_USER);
    let before = server_connections(pg, APP_USER);
    let wrong = psql(proxy.rw_port, APP_USER, "not-the-password", "SELECT 1").unwrap_err();
    assert!(wrong.contains("password authentication failed for user \"app\""), "{wrong}");
    let unknown = psql(proxy.rw_port, "nobody", "whatever", "SELECT 1").unwrap_err();
    assert!(unknown.contains("password authentication failed for user \"nobody\""), "{unknown}");
    assert_eq!(server_connections(pg, APP_USER), before, "a refused client opens no server connection");
}
