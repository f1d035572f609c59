//! Story: an operator runs `rampart proxy` as a service. Every client connection leaves one JSON
//! line in the access log saying who it was, where it went and how it ended; `systemctl reload`
//! (SIGHUP) changes the read-only policy and rotates the access log without dropping an open
//! session, and a broken file is refused while the proxy carries on; `systemctl stop` (SIGTERM)
//! closes the ports at once, lets a running query and an open transaction finish, gives an idle
//! client PostgreSQL's own FATAL 57P01, ends (and cancels) a query still running at
//! `proxy.shutdown_timeout` the same way, and exits 0; a second signal cuts a long wait short.
//! A transaction-mode proxy stops the same way. Finally `rampart check-config --proxy` judges an
//! application host's file.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::proxy::{cluster_and_pool, connect_watched, Proxy};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The access log's records, one JSON object per line (every line must parse).
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the access log holds `n` records and returns them.
fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    support::wait_until(Duration::from_secs(15), Duration::from_millis(50), || records(path).len() >= n);
    let r = records(path);
    assert_eq!(r.len(), n, "records in {}: {r:#?}", path.display());
    r
}

/// Waits (10 s at most) until `n` active sessions on `db`'s server run a query matching `pattern`
/// (SQL LIKE).
async fn active_queries_become(db: &Client, pattern: &str, n: i64) -> bool {
    support::wait_until_async(Duration::from_secs(10), Duration::from_millis(20), || async {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state = 'active'";
        db.query_one(sql, &[&pattern]).await.unwrap().get::<_, i64>(0) == n
    })
    .await
}

async fn server_port(db: &Client) -> u16 {
    db.query_one("SELECT inet_server_port()", &[]).await.expect("inet_server_port").get::<_, i32>(0) as u16
}

/// A read-only session through the proxy, once the proxy routes to replicas.
async fn ro_session(proxy: &Proxy, replicas: &[u16]) -> (Client, u16) {
    for _ in 0..150 {
        let db = support::connect_superuser(proxy.ro_port).await.expect("read-only connection");
        let port = server_port(&db).await;
        if replicas.contains(&port) {
            return (db, port);
        }
        drop(db);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the read-only port never reached a replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_reload_and_graceful_stop() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let replicas: Vec<u16> = (0..3).filter(|&i| i != leader).map(|i| c.pg_port(i)).collect();
    let log = c.dir().join("access.json");
    let settings =
        |policy: &str| format!("  shutdown_timeout: 4\n  access_log: {}\n  ro_policy: {policy}\n", log.display());
    let mut proxy = Proxy::start(&c, &settings("round_robin"));
    let test_began = jiff::Timestamp::now();

    // (c) Three connections: a read-write session, a read-only one, and one to a database that
    // does not exist. The harness's port probes leave no record.
    let rw = support::connect_superuser(proxy.rw_port).await.expect("read-write connection");
    rw.simple_query("SELECT 1").await.unwrap();
    drop(rw);
    wait_records(&log, 1);
    let (ro, ro_backend) = ro_session(&proxy, &replicas).await;
    drop(ro);
    // ro_session may have opened (and logged) sessions that fell back to the primary first.
    support::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        records(&log).iter().any(|r| r["port"] == "ro" && r["route"] == "replica")
    });
    let before_bad_db = records(&log).len();
    let Err(err) = connect_watched(proxy.rw_port, "no_such_db").await else {
        panic!("a database that does not exist was connected to")
    };
    assert_eq!(err.code(), Some(&SqlState::INVALID_CATALOG_NAME), "{err}");
    let all = wait_records(&log, before_bad_db + 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(support::SUPERUSER_PASSWORD), "a password in the access log");
    assert!(!text.contains("SELECT"), "query text in the access log");
    let leader_addr = format!("127.0.0.1:{}", c.pg_port(leader));
    for r in &all {
        println!("access log: {r}");
        assert_eq!(r["user"], "postgres");
        assert!(r["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{r}");
        let start: jiff::Timestamp = r["start"].as_str().unwrap().parse().expect("RFC 3339 start");
        assert!(start >= test_began.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap(), "{r}");
        assert!(r["duration_ms"].is_u64(), "{r}");
        assert_eq!(r["tls"], false);
    }
    let rw_rec = &all[0];
    assert_eq!((rw_rec["port"].as_str(), rw_rec["database"].as_str()), (Some("rw"), Some("postgres")));
    assert_eq!((rw_rec["route"].as_str(), rw_rec["backend"].as_str()), (Some("primary"), Some(c.name(leader))));
    assert_eq!(rw_rec["backend_addr"].as_str(), Some(leader_addr.as_str()));
    assert_eq!(rw_rec["outcome"], "client_closed");
    assert!(rw_rec["sqlstate"].is_null() && rw_rec["error"].is_null(), "{rw_rec}");
    assert!(rw_rec["bytes_from_client"].as_u64().unwrap() > 0 && rw_rec["bytes_to_client"].as_u64().unwrap() > 0);
    let ro_rec = all.iter().find(|r| r["route"] == "replica").unwrap();
    assert_eq!((ro_rec["port"].as_str(), ro_rec["outcome"].as_str()), (Some("ro"), Some("client_closed")));
    assert_eq!(ro_rec["backend_addr"].as_str(), Some(format!("127.0.0.1:{ro_backend}").as_str()));
    let bad = all.last().unwrap();
    assert_eq!((bad["database"].as_str(), bad["outcome"].as_str()), (Some("no_such_db"), Some("server_error")));
    assert_eq!((bad["sqlstate"].as_str(), bad["route"].as_str()), (Some("3D000"), Some("primary")));

    // (b) Reload. Two read-only sessions are pinned to one replica (A); the policy becomes
    // least_connections, so the next two new sessions both go to the other replica, where round
    // robin would have sent one of them to A. The log is rotated as logrotate does it.
    let mut pinned = Vec::new();
    let mut a = None;
    let mut dropped = 0;
    while pinned.len() < 2 {
        let db = support::connect_superuser(proxy.ro_port).await.expect("read-only connection");
        let port = server_port(&db).await;
        if a.is_none_or(|a| a == port) {
            a = Some(port);
            pinned.push(db);
        } else {
            dropped += 1;
        }
    }
    let a = a.unwrap();
    // The sessions dropped above are in the old file before it is rotated.
    let all_before_rotation = wait_records(&log, all.len() + dropped).len();
    let rotated = c.dir().join("access.json.1");
    std::fs::rename(&log, &rotated).unwrap();
    let admin = support::free_port();
    proxy.rewrite_config(&format!("{}  listen_admin: 127.0.0.1:{admin}\n", settings("least_connections")));
    proxy.signal(Signal::SIGHUP);
    assert!(
        support::wait_until(Duration::from_secs(10), Duration::from_millis(50), || proxy
            .log()
            .contains("configuration reloaded")),
        "no reload in the proxy's log"
    );
    let proxy_log = proxy.log();
    let reloaded = proxy_log.lines().find(|l| l.contains("configuration reloaded")).unwrap();
    assert!(reloaded.contains("proxy.ro_policy"), "{reloaded}");
    assert!(
        proxy_log.lines().any(|l| l.contains("after a restart") && l.contains("proxy.listen_admin")),
        "the admin port needs a restart and the log must say so:\n{proxy_log}"
    );
    for db in &pinned {
        assert_eq!(server_port(db).await, a, "a pinned session survives the reload");
    }
    let s1 = support::connect_superuser(proxy.ro_port).await.unwrap();
    let s2 = support::connect_superuser(proxy.ro_port).await.unwrap();
    let (p1, p2) = (server_port(&s1).await, server_port(&s2).await);
    assert!(p1 != a && p2 != a && replicas.contains(&p1), "least_connections: both new sessions avoid {a}: {p1}, {p2}");

    // A broken file is refused with a message naming the key; the proxy carries on.
    proxy.rewrite_config(&settings("random"));
    proxy.signal(Signal::SIGHUP);
    assert!(
        support::wait_until(Duration::from_secs(10), Duration::from_millis(50), || proxy
            .log()
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("proxy.ro_policy"))),
        "no refusal naming proxy.ro_policy:\n{}",
        proxy.log()
    );
    assert!(proxy.is_running(), "an invalid file must not stop the proxy");
    assert_eq!(server_port(&pinned[0]).await, a);
    drop((pinned, s1, s2));
    // The four read-only sessions end in the new file; the rotated one got nothing more.
    wait_records(&log, 4);
    assert_eq!(records(&rotated).len(), all_before_rotation);

    // (a) Graceful stop: a query of 2 s finishes, an idle client gets 57P01 at once, a query
    // still running when shutdown_timeout (4 s) passes gets 57P01, the ports close, exit 0.
    let (busy, busy_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
    let (idle, idle_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
    let (stuck, stuck_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
    let (in_tx, in_tx_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
    in_tx.batch_execute("CREATE TABLE stop_story (id int); BEGIN; INSERT INTO stop_story VALUES (1)").await.unwrap();
    let running = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(2)").await.map(|_| busy) });
    let too_long = tokio::spawn(async move { stuck.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    let primary = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    assert!(active_queries_become(&primary, "SELECT pg_sleep(%", 2).await, "both sleeps run on the primary");
    let before = records(&log).len();
    let signalled = Instant::now();
    proxy.signal(Signal::SIGTERM);

    let err = idle_conn.await.unwrap().expect_err("the idle client is told");
    println!("idle client after {:?}: {}", signalled.elapsed(), db_message(&err));
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    assert!(idle.is_closed());
    let refused = std::net::TcpStream::connect(("127.0.0.1", proxy.rw_port)).expect_err("the port is closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    let ro_refused = std::net::TcpStream::connect(("127.0.0.1", proxy.ro_port)).expect_err("the ro port is closed");
    assert_eq!(ro_refused.kind(), std::io::ErrorKind::ConnectionRefused);

    // A transaction open at the signal may finish: its next statements and COMMIT go through,
    // then the session ends.
    in_tx.batch_execute("INSERT INTO stop_story VALUES (2); COMMIT").await.expect("the open transaction commits");
    let err = in_tx_conn.await.unwrap().expect_err("then the session ends");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    let committed: i64 = primary.query_one("SELECT count(*) FROM stop_story", &[]).await.unwrap().get(0);
    assert_eq!(committed, 2);

    let busy = running.await.unwrap().expect("the running query gets its result");
    println!("pg_sleep(2) answered {:?} after the signal", signalled.elapsed());
    let err = busy_conn.await.unwrap().expect_err("then the session ends");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    drop(busy);
    let err = too_long.await.unwrap().expect_err("a query past the bound is ended");
    println!("pg_sleep(30) ended {:?} after the signal: {}", signalled.elapsed(), db_message(&err));
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    let _ = stuck_conn.await;
    let status = proxy.wait_exit(Duration::from_secs(30)).expect("the proxy exits");
    println!("proxy exited {:?} after the signal: {status}", signalled.elapsed());
    assert!(status.success(), "exit status {status}");

    // The query cut short was cancelled on the server too (it would sleep on for 26 s).
    assert!(
        active_queries_become(&primary, "SELECT pg_sleep(30)", 0).await,
        "pg_sleep(30) still runs on the primary after the proxy ended its session"
    );
    let stopped: Vec<Value> = records(&log).split_off(before);
    assert_eq!(stopped.len(), 4, "{stopped:#?}");
    for r in &stopped {
        assert_eq!((r["outcome"].as_str(), r["sqlstate"].as_str()), (Some("shut_down"), Some("57P01")), "{r}");
    }
    let proxy_log = proxy.log();
    assert!(proxy_log.contains("rampart proxy stopped"), "{proxy_log}");
    drop(proxy);

    // A second signal cuts the wait short: with a minute to wait, the busy session still ends
    // with 57P01 as soon as the operator insists.
    let mut proxy = Proxy::start(&c, "  shutdown_timeout: 60\n");
    let (sleeper, sleeper_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
    let sleeping = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    assert!(active_queries_become(&primary, "SELECT pg_sleep(30)", 1).await, "the sleep runs on the primary");
    proxy.signal(Signal::SIGINT);
    // Two signals sent back to back may be delivered as one: wait until the first is handled.
    assert!(support::wait_until(Duration::from_secs(10), Duration::from_millis(20), || proxy
        .log()
        .contains("rampart proxy stopping (SIGINT)")));
    let again = Instant::now();
    proxy.signal(Signal::SIGINT);
    let err = sleeping.await.unwrap().expect_err("the query is ended");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    let _ = sleeper_conn.await;
    let status = proxy.wait_exit(Duration::from_secs(30)).expect("the proxy exits long before its 60 s bound");
    println!("second SIGINT: proxy exited {:?} after it: {status}", again.elapsed());
    assert!(status.success(), "exit status {status}");
}

/// A transaction-mode proxy stops as the session relay does: a client between transactions is
/// told at once (it holds no server), a statement still running when `shutdown_timeout` passes
/// is ended with 57P01, and the proxy exits 0.
#[test]
fn a_pooling_proxy_stops_gracefully_too() {
    let (_c, mut proxy, pg_port) = cluster_and_pool(4, "  shutdown_timeout: 3\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (idle, idle_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
        idle.simple_query("SELECT 1").await.expect("a first transaction");
        let (stuck, stuck_conn) = connect_watched(proxy.rw_port, "postgres").await.unwrap();
        let too_long = tokio::spawn(async move { stuck.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
        let primary = support::connect_superuser(pg_port).await.unwrap();
        // Signalled once the statement runs on the server, not after a guessed pause.
        active_queries_become(&primary, "SELECT pg_sleep(30)", 1).await;
        let signalled = Instant::now();
        proxy.signal(Signal::SIGTERM);

        let err = idle_conn.await.unwrap().expect_err("the idle client is told");
        println!("idle pooled client after {:?}: {}", signalled.elapsed(), db_message(&err));
        assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
        let err = too_long.await.unwrap().expect_err("a statement past the bound is ended");
        println!("pg_sleep(30) ended {:?} after the signal: {}", signalled.elapsed(), db_message(&err));
        assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
        let _ = stuck_conn.await;
    });
    let status = proxy.wait_exit(Duration::from_secs(30)).expect("the proxy exits");
    assert!(status.success(), "exit status {status}");
}

/// `FATAL 57P01: terminating connection ...` for a server's (or the proxy's) error.
fn db_message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(e) => format!("{} {}: {}", e.severity(), e.code().code(), e.message()),
        None => err.to_string(),
    }
}

/// `rampart check-config --proxy FILE` with `env` added.
fn check(args: &[&str]) -> std::process::Output {
    std::process::Command::new(support::rampart_bin())
        .arg("check-config")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running rampart check-config")
}

#[test]
fn check_config_judges_a_proxy_file() {
    let dir = support::TestDir::new("check-proxy");
    let file = dir.join("proxy.yml");
    let good = format!(
        "scope: pg\netcd3:\n  hosts: 10.0.0.1:2379,10.0.0.2:2379\nproxy:\n  listen: 0.0.0.0:5432\n  listen_ro: 0.0.0.0:5433\n  access_log: {}\n",
        dir.join("access.json").display()
    );
    std::fs::write(&file, &good).unwrap();
    let f = file.to_str().unwrap();

    let out = check(&["--proxy", f]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("valid proxy configuration for cluster 'pg'"), "{stdout}");
    assert!(stdout.contains("read-write 0.0.0.0:5432, read-only 0.0.0.0:5433"), "{stdout}");
    assert!(!dir.join("access.json").exists(), "check-config touches nothing");

    // Read as a member's file it fails for the member keys, and says to use --proxy.
    let out = check(&[f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing required") && stderr.contains("check-config --proxy"), "{stderr}");

    // A bad proxy file: one line naming the file, the line and the key.
    std::fs::write(
        &file,
        good.replace("  listen_ro: 0.0.0.0:5433\n", "  listen_ro: 0.0.0.0:5433\n  shutdown_timeout: soon\n"),
    )
    .unwrap();
    let out = check(&["--proxy", f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("{f}:7: proxy.shutdown_timeout")), "{stderr}");
    assert!(!stderr.contains("check-config --proxy"), "no hint when --proxy was given: {stderr}");

    // The access log's directory must exist; nothing is created.
    std::fs::write(&file, good.replace(dir.path().to_str().unwrap(), "/nonexistent-rampart-dir")).unwrap();
    let out = check(&["--proxy", f]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("proxy.access_log") && stderr.contains("/nonexistent-rampart-dir"), "{stderr}");
}
