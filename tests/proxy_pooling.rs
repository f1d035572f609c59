//! Stories of `rampart proxy` pooling by transaction (`proxy.pool_mode: transaction`), against a
//! real PostgreSQL 15 and etcd:
//! * pgbench in its three query modes (simple, extended, prepared) and its TPC-B script runs
//!   through a pool of a few server connections with no failed transaction, many clients
//!   sharing those few servers;
//! * 2,000 pgbench clients, connected at once, are served by a pool of 20 server connections;
//! * the proxy authenticates clients itself: with SCRAM against verifiers it reads by
//!   `auth_query` (logging in to PostgreSQL with the client's key), and a wrong password or an
//!   unknown user gets PostgreSQL's FATAL 28P01 without the proxy opening a server connection;
//! * the admin HTTP port shows the pools as the console does: `/metrics` (the PgBouncer
//!   exporter's figures) and `/stats.json` count the pooled clients and the servers they hold.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::cluster::Cluster;
use support::proxy::{
    cluster_and_pool, cluster_and_pool_app_in_auth_file, cluster_and_session_pool, pool_cluster, server_connections,
    Proxy, APP_PASSWORD, APP_USER,
};
use tokio_postgres::Client;

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
    psql_in(port, user, password, "postgres", sql)
}

/// [`psql`] in `database`, columns separated by `|`.
fn psql_in(port: u16, user: &str, password: &str, database: &str, sql: &str) -> Result<String, String> {
    let out = run(Command::new(support::pg_bin_dir().join("psql"))
        .args(["-X", "-At", "-F", "|", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", database])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// [`cluster_and_pool`] with `nodes` members; returns the leader's index.
fn cluster_of(nodes: usize, pool_size: usize, extra: &str) -> (Cluster, Proxy, usize) {
    pool_cluster(nodes, pool_size, extra, false, Proxy::start)
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

/// psql on the admin console (`rampart` database) through `port` as `user`.
fn console(port: u16, user: &str, password: &str, command: &str) -> Result<String, String> {
    psql_in(port, user, password, "rampart", command)
}

/// The `SHOW POOLS` row of `database`/`user` as column name to value.
fn pool_row(port: u16, database: &str, user: &str) -> std::collections::HashMap<String, String> {
    let out = run(Command::new(support::pg_bin_dir().join("psql"))
        .args(["-X", "-A", "-F", "|", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", APP_USER, "-d", "rampart"])
        .args(["-c", "SHOW POOLS"])
        .env("PGPASSWORD", APP_PASSWORD));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    let row = lines
        .map(|l| l.split('|').collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&database) && cells.get(1) == Some(&user))
        .unwrap_or_else(|| panic!("no pool {database}/{user} in:\n{text}"));
    header.iter().zip(row).map(|(h, v)| (h.to_string(), v.to_string())).collect()
}

/// Three pooled clients through `port` that each ran a query; the first is inside a
/// transaction (it holds a server), the other two are between transactions (they hold none).
async fn three_clients_one_in_a_transaction(port: u16) -> (Client, Client, Client) {
    let connect = || support::client::connect(port, APP_USER, APP_PASSWORD);
    let (a, b, c) = (connect().await.unwrap(), connect().await.unwrap(), connect().await.unwrap());
    for client in [&a, &b, &c] {
        client.simple_query("SELECT 1").await.unwrap();
    }
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    (a, b, c)
}

#[test]
fn the_admin_console_shows_the_pools_and_pauses_clients() {
    let (_c, proxy, _pg) = cluster_and_pool(4, &format!("  admin_users: {APP_USER}\n"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (a, b, c) = three_clients_one_in_a_transaction(proxy.rw_port).await;
        let row = pool_row(proxy.rw_port, "postgres", APP_USER);
        assert_eq!(row["sv_active"], "1", "{row:?}");
        assert_eq!(row["cl_waiting"], "0", "{row:?}");
        assert_eq!(row["pool_mode"], "transaction", "{row:?}");
        assert!(row["cl_active"].parse::<u32>().unwrap() >= 3, "three clients of the test, and psql's: {row:?}");

        // PAUSE waits for the open transaction, then holds every new one until RESUME.
        let port = proxy.rw_port;
        let pause = tokio::task::spawn_blocking(move || console(port, APP_USER, APP_PASSWORD, "PAUSE"));
        let paused = move || {
            let dbs = console(port, APP_USER, APP_PASSWORD, "SHOW DATABASES").unwrap_or_default();
            // name|host|port|database|force_user|pool_size|...|paused|disabled
            dbs.lines().any(|l| l.starts_with("postgres|") && l.split('|').rev().nth(1) == Some("1"))
        };
        assert!(
            support::wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(100), paused),
            "SHOW DATABASES says postgres is paused"
        );
        assert!(!pause.is_finished(), "PAUSE returns only once the open transaction ended");
        a.batch_execute("COMMIT").await.unwrap();
        assert_eq!(pause.await.unwrap().unwrap(), "PAUSE");
        let held = tokio::spawn(async move { b.simple_query("SELECT 42").await.map(|_| ()) });
        let waiting = || {
            let row = pool_row(port, "postgres", APP_USER);
            row["cl_waiting"] == "1"
        };
        assert!(
            support::wait_until(std::time::Duration::from_secs(10), std::time::Duration::from_millis(100), waiting),
            "the client's query waits while paused"
        );
        assert!(!held.is_finished());
        assert_eq!(console(port, APP_USER, APP_PASSWORD, "RESUME").unwrap(), "RESUME");
        held.await.unwrap().expect("the held query runs after RESUME");
        c.simple_query("SELECT 1").await.unwrap();
    });
    // Not an admin: SHOW only... and not at all for someone in neither list.
    let refused = console(proxy.rw_port, "postgres", support::SUPERUSER_PASSWORD, "SHOW POOLS").unwrap_err();
    assert!(refused.contains("neither proxy.admin_users nor proxy.stats_users"), "{refused}");
    let unknown = console(proxy.rw_port, APP_USER, APP_PASSWORD, "SHOW NOTHING").unwrap_err();
    assert!(unknown.contains("unknown command"), "{unknown}");
}

/// The value of the sample `series` (`name{labels}` as written) in a `/metrics` body.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_admin_port_shows_the_pools_and_their_counters() {
    let (c, proxy, leader) = pool_cluster(1, 4, "", false, Proxy::start_with_admin);
    let admin = proxy.admin_port.expect("started with an admin port");
    let backend = c.name(leader).to_string();
    let pool = |family: &str| {
        format!("rampart_proxy_pools_{family}{{database=\"postgres\",user=\"{APP_USER}\",backend=\"{backend}\"}}")
    };
    let get = |path: &str| {
        let r = support::http_request(admin, "GET", path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (a, b, d) = three_clients_one_in_a_transaction(proxy.rw_port).await;
        let m = get("/metrics").body;
        assert_eq!(sample(&m, &pool("server_active_connections")), Some(1.0), "{m}");
        assert_eq!(sample(&m, &pool("client_active_connections")), Some(3.0), "{m}");
        assert_eq!(sample(&m, &pool("client_waiting_connections")), Some(0.0), "{m}");
        assert_eq!(sample(&m, &pool("client_maxwait_seconds")), Some(0.0), "{m}");
        let servers: f64 = ["server_active_connections", "server_idle_connections", "server_login_connections"]
            .iter()
            .map(|f| sample(&m, &pool(f)).unwrap_or_else(|| panic!("{f}: {m}")))
            .sum();
        assert!((1.0..=4.0).contains(&servers), "{servers} servers in a pool of 4: {m}");
        let stats = |m: &str, family: &str| {
            sample(m, &format!("rampart_proxy_stats_{family}{{database=\"postgres\"}}"))
                .unwrap_or_else(|| panic!("{family}: {m}"))
        };
        assert!(stats(&m, "sql_transactions_pooled_total") >= 3.0, "three transactions ended: {m}");
        assert!(stats(&m, "queries_pooled_total") >= 4.0, "{m}");
        assert!(stats(&m, "received_bytes_total") > 0.0 && stats(&m, "sent_bytes_total") > 0.0, "{m}");

        let v = get("/stats.json").json().expect("JSON");
        let row = v["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["database"] == "postgres" && p["user"] == APP_USER))
            .unwrap_or_else(|| panic!("no pool postgres/{APP_USER}: {v}"));
        assert_eq!((row["servers"]["active"].as_u64(), row["clients"]["active"].as_u64()), (Some(1), Some(3)), "{row}");
        assert_eq!(row["backend"].as_str(), Some(backend.as_str()), "{row}");
        assert!(v["pool_stats"].as_array().is_some_and(|s| s.iter().any(|d| d["database"] == "postgres")), "{v}");
        let page = get("/stats").body;
        assert!(page.contains(&format!("data-database=\"postgres\" data-user=\"{APP_USER}\"")), "{page}");

        // The figures are live: the server comes back at COMMIT, the clients leave with their sessions.
        a.batch_execute("COMMIT").await.unwrap();
        drop((a, b, d));
        let back = || {
            let m = get("/metrics").body;
            sample(&m, &pool("server_active_connections")) == Some(0.0)
                && sample(&m, &pool("client_active_connections")) == Some(0.0)
        };
        assert!(
            support::wait_until(Duration::from_secs(10), Duration::from_millis(100), back),
            "{}",
            get("/metrics").body
        );
    });
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

/// The member port a session through the proxy reaches.
fn server_port_through(proxy: u16) -> Result<String, String> {
    psql(proxy, APP_USER, APP_PASSWORD, "SELECT inet_server_port()")
}

#[test]
fn a_switchover_under_pgbench_load_fails_no_transaction() {
    let (c, proxy, leader) = cluster_of(2, 8, "");
    let cand = 1 - leader;
    let (ok, init) =
        pgbench(c.pg_port(leader), support::SUPERUSER, support::SUPERUSER_PASSWORD, &["-i", "-s", "1", "-q"]);
    assert!(ok, "pgbench -i directly: {init}");
    let port = proxy.rw_port;
    let load = std::thread::spawn(move || {
        pgbench(port, APP_USER, APP_PASSWORD, &["-M", "prepared", "-c", "16", "-j", "2", "-T", "30", "-n"])
    });
    // Let the load run, then hand the leadership over while it does.
    std::thread::sleep(Duration::from_secs(8));
    let r = c.request_switchover(leader, cand, Duration::from_secs(90));
    assert_eq!(r.status, 200, "{}", r.body);
    let (ok, report) = load.join().unwrap();
    assert!(ok, "pgbench through the switchover: {report}");
    assert_eq!(report_number(&report, "number of failed transactions"), 0.0, "{report}");
    assert!(!report.contains("aborted"), "no client aborted: {report}");
    assert_eq!(server_port_through(proxy.rw_port).unwrap(), c.pg_port(cand).to_string(), "writes go to the new leader");
    let log = proxy.log();
    assert!(log.contains("switchover drain report written"), "the proxy told the leader it drained:\n{log}");
}

/// A client through the proxy whose notifications are kept (LISTEN).
async fn listener(port: u16) -> (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user(APP_USER).password(APP_PASSWORD).dbname("postgres");
    let (client, mut connection) = cfg.connect(tokio_postgres::NoTls).await.expect("connecting through the proxy");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    (client, rx)
}

/// The first column of the first row of a simple query, as text.
async fn first(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[test]
fn session_level_features_pin_the_client_to_its_server_and_work_as_directly() {
    let (_c, proxy, pg) = cluster_and_pool(8, "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            pg,
            "CREATE SCHEMA app; CREATE TABLE app.marker (v text); INSERT INTO app.marker VALUES ('app')",
        )
        .await;
        let connect = || support::client::connect(proxy.rw_port, APP_USER, APP_PASSWORD);
        // Others keep the pool busy between the pinned clients' statements, so an unpinned
        // client would land on another server most of the time.
        let others: Vec<_> = connect_n(4, &connect).await;
        let churn = |round: usize| {
            let others = &others;
            async move {
                for o in others {
                    o.simple_query(&format!("SELECT {round}")).await.unwrap();
                }
            }
        };

        // LISTEN: pinned, and the notifications come to it.
        let (listening, mut notes) = listener(proxy.rw_port).await;
        listening.simple_query("LISTEN jobs").await.unwrap();
        for (round, other) in others.iter().enumerate().take(3) {
            churn(round).await;
            other.simple_query(&format!("NOTIFY jobs, 'job {round}'")).await.unwrap();
            let (channel, payload) = tokio::time::timeout(std::time::Duration::from_secs(10), notes.recv())
                .await
                .expect("the notification arrives")
                .expect("the connection is open");
            assert_eq!((channel.as_str(), payload), ("jobs", format!("job {round}")));
        }

        // SET of a parameter the server does not report: kept for the session. Sent inside a
        // transaction as a query of its own, while the client already holds its server.
        let set = connect().await.unwrap();
        for sql in ["BEGIN", "SET search_path = app, public", "COMMIT"] {
            set.simple_query(sql).await.unwrap();
        }
        // A temporary table, a session advisory lock, a cursor WITH HOLD, SQL PREPARE.
        let temp = connect().await.unwrap();
        temp.simple_query("CREATE TEMP TABLE scratch (n int); INSERT INTO scratch VALUES (1), (2)").await.unwrap();
        let lock = connect().await.unwrap();
        assert_eq!(first(&lock, "SELECT pg_advisory_lock(7)::text").await, "");
        let hold = connect().await.unwrap();
        hold.simple_query("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 3); COMMIT").await.unwrap();
        let prep = connect().await.unwrap();
        prep.simple_query("PREPARE answer AS SELECT 42").await.unwrap();
        for round in 0..3 {
            churn(round).await;
            assert_eq!(first(&set, "SELECT v FROM marker").await, "app", "search_path kept");
            assert_eq!(first(&temp, "SELECT count(*) FROM scratch").await, "2", "temp table kept");
            assert_eq!(first(&others[0], "SELECT pg_try_advisory_lock(7)::text").await, "false", "lock still held");
            assert_eq!(first(&hold, "FETCH 1 FROM c").await, (round + 1).to_string(), "cursor kept");
            assert_eq!(first(&prep, "EXECUTE answer").await, "42", "prepared statement kept");
        }
        assert_eq!(first(&lock, "SELECT pg_advisory_unlock(7)::text").await, "true", "the same session unlocks it");
    });
}

#[test]
fn in_session_mode_a_server_serves_one_whole_session_then_the_next_one_cleaned() {
    // One server connection: the second client can only get the first one's.
    let (_c, proxy, pg) = cluster_and_session_pool(1, "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let port = proxy.rw_port;
        let connect = move || support::client::connect(port, APP_USER, APP_PASSWORD);
        let a = connect().await.unwrap();
        let server = first(&a, "SELECT pg_backend_pid()::text").await;
        a.simple_query("SET search_path = elsewhere, public; CREATE TEMP TABLE mine (n int); PREPARE p AS SELECT 1")
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(first(&a, "SELECT pg_backend_pid()::text").await, server, "one server for the whole session");
        }
        // A protocol-level named statement, passed on under its own name.
        let plus_one = a.prepare("SELECT $1::int + 1").await.unwrap();
        assert_eq!(a.query_one(&plus_one, &[&41i32]).await.unwrap().get::<_, i32>(0), 42);
        assert_eq!(first(&a, "SHOW search_path").await, "elsewhere, public");
        let b = tokio::spawn(async move {
            let b = connect().await.unwrap();
            let seen = [
                "SELECT pg_backend_pid()::text",
                "SHOW search_path",
                "SELECT (to_regclass('pg_temp.mine') IS NULL)::text",
                "SELECT count(*)::text FROM pg_prepared_statements",
            ];
            let mut out = Vec::new();
            for sql in seen {
                out.push(first(&b, sql).await);
            }
            // A protocol-level named statement of its own, on the same server.
            let plus_two = b.prepare("SELECT $1::int + 2").await.unwrap();
            out.push(b.query_one(&plus_two, &[&40i32]).await.unwrap().get::<_, i32>(0).to_string());
            out
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!b.is_finished(), "the second session waits while the first holds the only server");
        drop(a);
        let seen = tokio::time::timeout(std::time::Duration::from_secs(20), b).await.expect("served").unwrap();
        assert_eq!(seen[0], server, "the server went back to the pool and on to the next session");
        assert_eq!(&seen[1..], ["\"$user\", public", "true", "0", "42"], "cleaned by server_reset_query (DISCARD ALL)");
    });
    assert_eq!(server_connections(pg, APP_USER), 1, "the one server, kept open");
}

/// `n` results of `f`, made one after another.
async fn connect_n<T, E: std::fmt::Debug, F, Fut>(n: usize, f: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(f().await.expect("connecting through the proxy"));
    }
    out
}

#[test]
fn bad_requests_get_clear_errors_and_the_other_clients_carry_on() {
    let (_c, proxy, _pg) = cluster_and_pool(4, "  idle_transaction_timeout: 1\n  max_client_conn: 3\n");
    let port = proxy.rw_port;
    let nodb = psql_in(port, APP_USER, APP_PASSWORD, "nosuchdb", "SELECT 1").unwrap_err();
    assert!(nodb.contains("database \"nosuchdb\" does not exist"), "{nodb}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let connect = || support::client::connect(port, APP_USER, APP_PASSWORD);
        let (idle_in_tx, steady) = (connect().await.unwrap(), connect().await.unwrap());
        idle_in_tx.batch_execute("BEGIN; SELECT 1").await.unwrap();
        // A third client fits; a fourth is over max_client_conn.
        let third = connect().await.unwrap();
        let over = match connect().await {
            Ok(_) => panic!("a fourth client is refused"),
            Err(e) => e.to_string(),
        };
        let over_db = psql(port, APP_USER, APP_PASSWORD, "SELECT 1").unwrap_err();
        assert!(over_db.contains("no more connections allowed (max_client_conn)"), "{over} / {over_db}");
        drop(third);
        // Past idle_transaction_timeout the idle transaction's client is disconnected.
        // (Watched without sending anything: a query would end the idleness.)
        let ended = support::wait_until(Duration::from_secs(15), Duration::from_millis(100), || idle_in_tx.is_closed());
        assert!(ended, "the client idle in its transaction was disconnected");
        let e = idle_in_tx.simple_query("SELECT 1").await.unwrap_err().to_string();
        assert!(e.contains("closed") || e.contains("idle-in-transaction"), "{e}");
        // The other client carries on, in transactions of its own.
        for _ in 0..3 {
            steady.batch_execute("BEGIN; SELECT 1; COMMIT").await.expect("the steady client carries on");
        }
    });
}

#[test]
fn after_a_crash_failover_clients_between_transactions_carry_on() {
    let (mut c, proxy, old) = cluster_of(3, 4, "  hold_timeout: 40\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..6 {
            let client = support::client::connect(proxy.rw_port, APP_USER, APP_PASSWORD).await.unwrap();
            assert_eq!(first(&client, "SELECT inet_server_port()").await, c.pg_port(old).to_string());
            clients.push(client);
        }
        // The primary crashes (its agent too, so it is not restarted in place) while every
        // client is between transactions.
        c.kill_agent(old);
        c.kill_postgres(old).expect("postmaster pid");
        // The clients stay idle through the crash itself (the orphaned server processes notice
        // the postmaster's death and say goodbye within moments): a transaction sent in that
        // very instant is one in flight, which may get an error.
        std::thread::sleep(Duration::from_millis(500));
        for (i, client) in clients.iter().enumerate() {
            // Held until the new primary is there, then served by it: no error.
            let port = first(client, "SELECT inet_server_port()").await;
            let new = c.leader_index().expect("a new leader");
            assert_ne!(new, old);
            assert_eq!(port, c.pg_port(new).to_string(), "client {i} reaches the new primary");
            client.batch_execute("BEGIN; SELECT 1; COMMIT").await.expect("and runs transactions there");
        }
    });
}

#[test]
fn sighup_reloads_pool_sizes_and_users_without_dropping_a_client() {
    let (c, proxy, _pg) = cluster_and_pool(2, &format!("  admin_users: {APP_USER}\n"));
    let port = proxy.rw_port;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kept = support::client::connect(port, APP_USER, APP_PASSWORD).await.unwrap();
        kept.batch_execute("BEGIN; SELECT 1").await.unwrap();
        // A new user in the auth_file, a larger pool.
        support::client::sql(c.pg_port(c.leader_index().unwrap()), "CREATE ROLE newcomer LOGIN PASSWORD 'newcomer-secret'").await;
        let auth_file = c.dir().join("userlist.txt");
        let mut users = std::fs::read_to_string(&auth_file).unwrap();
        users.push_str("\"newcomer\" \"newcomer-secret\"\n");
        std::fs::write(&auth_file, users).unwrap();
        proxy.rewrite_config(&format!(
            "  pool_mode: transaction\n  default_pool_size: 5\n  auth_file: {}\n  auth_user: {}\n  admin_users: {APP_USER}\n",
            auth_file.display(),
            support::SUPERUSER
        ));
        proxy.signal(nix::sys::signal::Signal::SIGHUP);
        let reloaded = support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            console(port, APP_USER, APP_PASSWORD, "SHOW CONFIG").is_ok_and(|t| t.contains("default_pool_size|5|"))
        });
        assert!(reloaded, "SHOW CONFIG gives the new pool size");
        assert_eq!(psql(port, "newcomer", "newcomer-secret", "SELECT current_user").unwrap(), "newcomer");
        // The client inside its transaction throughout: still there.
        kept.batch_execute("SELECT 2; COMMIT").await.expect("the open transaction survives the reload");
    });
}

#[test]
fn cancels_reach_the_held_server_and_a_dead_idle_server_never_reaches_a_client() {
    let (_c, proxy, pg) = cluster_and_pool(1, "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = support::client::connect(proxy.rw_port, APP_USER, APP_PASSWORD).await.unwrap();
        let server = first(&client, "SELECT pg_backend_pid()").await;
        // The pool's only server, idle now, is terminated behind the proxy's back: its FATAL
        // message and close wait on the idle connection, for nobody.
        support::client::sql(pg, &format!("SELECT pg_terminate_backend({server})")).await;
        // Gone for good (terminating is asynchronous): its goodbye now waits on the idle socket.
        let gone = support::wait_until_async(Duration::from_secs(10), Duration::from_millis(50), || async {
            let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {server}");
            support::client::query_text(pg, &sql).await.as_deref() == Some("0")
        })
        .await;
        assert!(gone, "the server process exited");
        let again = first(&client, "SELECT pg_backend_pid()").await;
        assert_ne!(again, server, "a new server connection, and no error from the dead one");
        // A cancel goes to the server the client holds while its query runs.
        let token = client.cancel_token();
        let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
        let running = support::wait_until_async(Duration::from_secs(10), Duration::from_millis(100), || async {
            support::client::query_text(pg, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
                .await
                .as_deref()
                == Some("1")
        })
        .await;
        assert!(running, "the query runs");
        token.cancel_query(tokio_postgres::NoTls).await.expect("sending the cancel through the proxy");
        let e = tokio::time::timeout(Duration::from_secs(10), sleeping).await.expect("cancelled in time").unwrap();
        let e = e.expect_err("the query was cancelled");
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::QUERY_CANCELED), "{e}");
    });
}

#[test]
fn max_db_connections_bounds_every_user_of_a_database_together() {
    let (_c, proxy, pg) = cluster_and_pool(4, "  max_db_connections: 3\n");
    let (ok, init) = pgbench(pg, support::SUPERUSER, support::SUPERUSER_PASSWORD, &["-i", "-s", "1", "-q"]);
    assert!(ok, "pgbench -i directly: {init}");
    let port = proxy.rw_port;
    // Two users at once, each with more clients than the database may have connections.
    let runs: Vec<_> = [(APP_USER, APP_PASSWORD), (support::SUPERUSER, support::SUPERUSER_PASSWORD)]
        .into_iter()
        .map(|(user, password)| {
            std::thread::spawn(move || pgbench(port, user, password, &["-S", "-c", "6", "-j", "2", "-T", "6", "-n"]))
        })
        .collect();
    // The proxy's server connections: not this psql's, nor the agent's own (application_name rampart).
    let mut most = 0;
    while runs.iter().any(|r| !r.is_finished()) {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'postgres' \
                   AND backend_type = 'client backend' AND application_name NOT IN ('psql', 'rampart')";
        let n: i64 = psql(pg, support::SUPERUSER, support::SUPERUSER_PASSWORD, sql).unwrap().parse().unwrap();
        most = most.max(n);
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in runs {
        let (ok, report) = r.join().unwrap();
        assert!(ok, "pgbench through the capped database: {report}");
        assert_eq!(report_number(&report, "number of failed transactions"), 0.0, "{report}");
    }
    assert!((1..=3).contains(&most), "{most} server connections at most for the database, capped at 3");
}
