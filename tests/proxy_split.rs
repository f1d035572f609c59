//! Stories of read/write splitting on one port (`proxy.load_balance: on`), through a
//! transaction-mode proxy in front of a real three-member cluster (PostgreSQL 15, etcd):
//! * reads land on the replicas and writes on the primary, each counted where it ran with
//!   `pg_is_in_recovery()` (listed in `read_only_functions`: it is VOLATILE in the catalog); a
//!   SELECT of a VOLATILE function (one that writes) runs on the primary, one of a STABLE
//!   function on a replica;
//! * a transaction reads on a replica until its first write and stays on the primary from then
//!   on, where it sees its own write; a read-only transaction runs on a replica; a rolled-back
//!   one leaves nothing; an empty one is answered by the proxy;
//! * read-your-writes: with one replica half a second behind, 10,000 write-then-read pairs over
//!   8 sessions never miss their own write (replicas serve the reads once they have it); with
//!   `read_your_writes: none` the same pairs do miss, so the check can fail;
//! * the admin port's `/metrics` and `/stats.json` and the console's `SHOW POOL_NODES` count the
//!   statements sent to each backend;
//! * a switchover under TPC-B and select-only pgbench load through the one port fails no
//!   transaction, and no write reaches a replica; after a crash of the primary, clients between
//!   transactions write on the new primary and read their writes back;
//! * a replica replaying further behind than `max_lag_time` gets no reads while it does;
//! * a read whose replica is down but still routed (its member key not expired yet) runs on the
//!   primary at once, rather than waiting for the replica;
//! * an SQLAlchemy application (ORM over psycopg 3, from PyPI) creating rows and reading them
//!   back at once, read-modify-write transactions, joins and aggregates, prints the same lines
//!   through a transaction-mode and a session-mode splitting proxy as against the primary
//!   directly, with one replica half a second behind, while the replicas serve reads;
//! * in session mode, a client reads on the replicas and keeps one primary server for its writes
//!   (each client its own), its prepared statements run wherever they are sent, a temporary table
//!   keeps it on the primary, and it carries on through a switchover between its transactions.

mod support;

use std::time::{Duration, Instant};

use support::proxy::{pool_cluster, pool_cluster_in, Proxy};
use support::python::run_script;
use tokio_postgres::{Client, SimpleQueryMessage};

/// The first column of the first row of a simple query, as text.
async fn simple_text(db: &Client, sql: &str) -> String {
    let rows = db.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Whether the server that ran `sql` (a query returning `pg_is_in_recovery()` or the like) is a
/// replica, asked with the simple protocol.
async fn on_replica(db: &Client, sql: &str) -> bool {
    simple_text(db, sql).await == "t"
}

/// A client through the splitting proxy at `port`, once its reads reach a replica: the replicas
/// stream and are routed, the proxy has read the function catalog, and the replicas have
/// replayed `where_am_i()`, a STABLE function telling whether it runs on a replica.
async fn reading_on_replicas(port: u16) -> Client {
    let db = support::client::connect(port, support::SUPERUSER, support::SUPERUSER_PASSWORD).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !on_replica(&db, "SELECT where_am_i()").await {
        assert!(Instant::now() < deadline, "no read reached a replica through {port} within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db
}

/// Makes the replica at `port` replay every commit `delay` late (`recovery_min_apply_delay`),
/// once the setting is in force.
async fn delay_replay(port: u16, delay: &str) {
    support::client::sql(port, &format!("ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")).await;
    support::client::sql(port, "SELECT pg_reload_conf()").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::client::query_text(port, "current_setting('recovery_min_apply_delay')").await.as_deref()
        != Some(delay)
    {
        assert!(Instant::now() < deadline, "recovery_min_apply_delay not in force on the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn one_port_sends_reads_to_replicas_and_writes_to_the_primary() {
    // pg_is_in_recovery() is VOLATILE in pg_proc, so it would run on the primary: listed as
    // read-only (as an operator lists Pgpool-II's read_only_function_list), it reads.
    let (c, proxy, leader) = pool_cluster(
        3,
        10,
        &format!(
            "  load_balance: on\n  read_your_writes: none\n  read_only_functions: [pg_is_in_recovery]\n  \
             admin_users: {}\n",
            support::SUPERUSER
        ),
        false,
        Proxy::start_with_admin,
    );
    let primary = c.pg_port(leader);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            primary,
            "CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL);
             CREATE FUNCTION log_note(t text) RETURNS boolean LANGUAGE sql VOLATILE
                 AS $$ INSERT INTO ledger (note) VALUES (t); SELECT pg_is_in_recovery() $$;
             CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        let db = support::client::connect(proxy.rw_port, support::SUPERUSER, support::SUPERUSER_PASSWORD)
            .await
            .expect("connect through the proxy");
        // The replicas are routed once they stream, and the STABLE function is known to be a
        // read once the proxy has read the catalog and the replicas have replayed it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(on_replica(&db, "SELECT where_am_i()").await) {
            assert!(Instant::now() < deadline, "no read reached a replica within 60 s; proxy log:\n{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Reads, with the simple and the extended protocol, all on replicas.
        for _ in 0..20 {
            assert!(on_replica(&db, "SELECT pg_is_in_recovery()").await, "a simple-query read on a replica");
            let row = db.query_one("SELECT pg_is_in_recovery(), count(*) FROM ledger", &[]).await.unwrap();
            assert!(row.get::<_, bool>(0), "an extended-protocol read on a replica");
        }
        assert!(on_replica(&db, "SELECT where_am_i()").await, "a STABLE function reads");

        // A SELECT of a function that writes runs on the primary (its INSERT would fail on a
        // replica), as do writes.
        assert!(!on_replica(&db, "SELECT log_note('by a volatile function')").await);
        db.execute("INSERT INTO ledger (note) VALUES ($1)", &[&"by an insert"]).await.expect("a write");
        db.batch_execute("SELECT 1; INSERT INTO ledger (note) VALUES ('by a multi-statement string')").await.unwrap();

        // A transaction reads on a replica until its first write, then runs on the primary.
        db.batch_execute("BEGIN").await.unwrap();
        assert!(on_replica(&db, "SELECT pg_is_in_recovery()").await, "before its first write: a replica");
        db.batch_execute("INSERT INTO ledger (note) VALUES ('in a transaction')").await.unwrap();
        assert!(!on_replica(&db, "SELECT pg_is_in_recovery()").await, "after it: the primary");
        assert_eq!(
            simple_text(&db, "SELECT count(*) FROM ledger WHERE note = 'in a transaction'").await,
            "1",
            "it reads its own write"
        );
        db.batch_execute("COMMIT").await.unwrap();

        // A read-only transaction runs on a replica; a rolled-back one leaves nothing; an empty
        // one is answered.
        db.batch_execute("BEGIN READ ONLY").await.unwrap();
        assert!(on_replica(&db, "SELECT pg_is_in_recovery()").await);
        assert!(on_replica(&db, "SELECT where_am_i()").await);
        db.batch_execute("COMMIT").await.unwrap();
        db.batch_execute("BEGIN; INSERT INTO ledger (note) VALUES ('rolled back'); ROLLBACK").await.unwrap();
        db.batch_execute("BEGIN").await.unwrap();
        db.batch_execute("INSERT INTO ledger (note) VALUES ('rolled back')").await.unwrap();
        db.batch_execute("ROLLBACK").await.unwrap();
        db.batch_execute("BEGIN").await.unwrap();
        db.batch_execute("COMMIT").await.unwrap();

        // What the primary kept.
        let direct = support::client::connect_superuser(primary).await.unwrap();
        let notes: Vec<String> =
            direct.query("SELECT note FROM ledger ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!(
            notes,
            ["by a volatile function", "by an insert", "by a multi-statement string", "in a transaction"],
            "every write reached the primary, once, and the rolled-back one did not"
        );
        assert!(on_replica(&db, "SELECT pg_is_in_recovery()").await, "the session still reads on replicas");
    });
    // The admin port counts where statements went, per backend, and the classifier's cache.
    let admin = proxy.admin_port.expect("an admin port");
    let metrics = support::client::http_request(admin, "GET", "/metrics", None).expect("GET /metrics").body;
    let value = |line_start: &str| -> u64 {
        let line =
            metrics.lines().find(|l| l.starts_with(line_start)).unwrap_or_else(|| panic!("{line_start}:\n{metrics}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    assert!(value("rampart_proxy_split_statements_by_role_total{role=\"replica\"}") >= 40, "{metrics}");
    assert!(value("rampart_proxy_split_statements_by_role_total{role=\"primary\"}") >= 5, "{metrics}");
    assert!(value("rampart_proxy_split_cache_hits_total") > 0, "{metrics}");
    let replicas: Vec<u16> = (0..c.len()).filter(|&i| i != leader).map(|i| c.pg_port(i)).collect();
    let per_replica: u64 = replicas
        .iter()
        .map(|p| value(&format!("rampart_proxy_split_statements_total{{backend=\"127.0.0.1:{p}\"}}")))
        .sum();
    assert!(per_replica >= 40, "the replicas' own counts add up: {metrics}");
    // And /stats.json (the /stats page shows the same).
    let stats = support::client::http_request(admin, "GET", "/stats.json", None).expect("GET /stats.json").body;
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("JSON");
    let in_json: u64 = stats["split"]["per_backend"]
        .as_array()
        .expect("split.per_backend")
        .iter()
        .filter(|b| replicas.iter().any(|p| b["backend"] == format!("127.0.0.1:{p}").as_str()))
        .map(|b| b["statements"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(in_json, per_replica, "{stats}");
    // So does the admin console, with Pgpool-II's SHOW POOL_NODES.
    rt.block_on(async {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(proxy.rw_port)
            .user(support::SUPERUSER)
            .password(support::SUPERUSER_PASSWORD)
            .dbname("rampart");
        let (console, connection) = cfg.connect(tokio_postgres::NoTls).await.expect("the admin console");
        tokio::spawn(connection);
        let rows = console.simple_query("SHOW POOL_NODES").await.unwrap();
        let nodes: Vec<(String, String, u64)> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some((
                    r.get("port").unwrap_or_default().to_string(),
                    r.get("role").unwrap_or_default().to_string(),
                    r.get("select_cnt").and_then(|v| v.parse().ok()).unwrap_or(0),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        assert_eq!((nodes[0].0.as_str(), nodes[0].1.as_str()), (primary.to_string().as_str(), "primary"), "{nodes:?}");
        assert!(nodes[1..].iter().all(|(_, role, _)| role == "standby"), "{nodes:?}");
        assert_eq!(nodes[1..].iter().map(|n| n.2).sum::<u64>(), per_replica, "{nodes:?}");
    });
}

/// What one session saw over its write-then-read pairs: reads that missed the session's own
/// write, and reads a replica served.
#[derive(Default, Debug)]
struct Seen {
    stale: usize,
    on_replica: usize,
}

/// `pairs` write-then-read pairs as session `session` through `port`: each inserts a row, then
/// counts it (every tenth after a pause of 50 ms, long enough for a replica to replay it).
async fn write_then_read(port: u16, session: i32, pairs: i32) -> Seen {
    let db = support::client::connect(port, support::SUPERUSER, support::SUPERUSER_PASSWORD).await.unwrap();
    let mut seen = Seen::default();
    for n in 0..pairs {
        db.execute("INSERT INTO ryw (session, n) VALUES ($1, $2)", &[&session, &n]).await.unwrap();
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let row = db
            .query_one("SELECT count(*), where_am_i() FROM ryw WHERE session = $1 AND n = $2", &[&session, &n])
            .await
            .unwrap();
        if row.get::<_, i64>(0) != 1 {
            seen.stale += 1;
        }
        if row.get::<_, bool>(1) {
            seen.on_replica += 1;
        }
    }
    seen
}

/// 8 sessions doing `total` write-then-read pairs through `port` together.
async fn pairs_through(port: u16, total: i32) -> Seen {
    let sessions: Vec<_> = (0..8).map(|s| tokio::spawn(write_then_read(port, s, total / 8))).collect();
    let mut all = Seen::default();
    for s in sessions {
        let seen = s.await.unwrap();
        all.stale += seen.stale;
        all.on_replica += seen.on_replica;
    }
    all
}

#[test]
fn a_session_reads_its_own_writes_even_from_a_lagging_replica() {
    let (c, proxy, leader) = pool_cluster(3, 20, "  load_balance: on\n", false, Proxy::start);
    let none = Proxy::start_named(
        &c,
        "proxy-none",
        &format!(
            "  pool_mode: transaction\n  auth_file: {}\n  auth_user: {}\n  default_pool_size: 20\n  load_balance: on\n  \
             read_your_writes: none\n",
            c.dir().join("userlist.txt").display(),
            support::SUPERUSER
        ),
    );
    let primary = c.pg_port(leader);
    let lagging = c.pg_port((leader + 1) % c.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            primary,
            "CREATE TABLE ryw (session int, n int, PRIMARY KEY (session, n));
             CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        // One replica replays everything half a second late.
        delay_replay(lagging, "500ms").await;
        // Both proxies route reads to replicas (the catalog read, the replicas streaming).
        for port in [proxy.rw_port, none.rw_port] {
            reading_on_replicas(port).await;
        }

        let seen = pairs_through(proxy.rw_port, 10_000).await;
        eprintln!("read_your_writes: session, 10000 pairs: {seen:?}");
        assert_eq!(seen.stale, 0, "read_your_writes: session: no read missed its session's write ({seen:?})");
        assert!(seen.on_replica > 0, "replicas served reads that had caught up ({seen:?})");
        support::client::sql(primary, "TRUNCATE ryw").await;
        let seen = pairs_through(none.rw_port, 2_000).await;
        eprintln!("read_your_writes: none, 2000 pairs: {seen:?}");
        assert!(seen.stale > 0, "read_your_writes: none reads from the lagging replica too ({seen:?})");
    });
}

/// pgbench through `port` as the superuser: whether it succeeded, and its whole report.
fn pgbench(port: u16, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(support::pg_bin_dir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", support::SUPERUSER])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", support::SUPERUSER_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("running pgbench");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The failed-transactions figure of a pgbench report.
fn failed(report: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.starts_with("number of failed transactions"))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

#[test]
fn reads_and_writes_carry_on_through_a_switchover() {
    let (c, proxy, leader) = pool_cluster(3, 10, "  load_balance: on\n", false, Proxy::start);
    let cand = (leader + 1) % c.len();
    let (ok, init) = pgbench(c.pg_port(leader), &["-i", "-s", "1", "-q"]);
    assert!(ok, "pgbench -i directly: {init}");
    let port = proxy.rw_port;
    // TPC-B (its BEGIN answered by the proxy, its writes on the primary) and select-only reads
    // (on the replicas), together.
    let writes = std::thread::spawn(move || pgbench(port, &["-c", "6", "-j", "2", "-T", "20", "-n"]));
    let reads = std::thread::spawn(move || pgbench(port, &["-S", "-c", "6", "-j", "2", "-T", "20", "-n"]));
    std::thread::sleep(Duration::from_secs(6));
    let r = c.request_switchover(leader, cand, Duration::from_secs(90));
    assert_eq!(r.status, 200, "{}", r.body);
    for (what, load) in [("TPC-B", writes), ("select-only", reads)] {
        let (ok, report) = load.join().unwrap();
        assert!(ok, "{what} through the switchover: {report}");
        assert_eq!(failed(&report), Some(0), "{what}: no failed transaction: {report}");
        assert!(!report.contains("aborted"), "{what}: no client aborted: {report}");
        assert!(!report.contains("read-only transaction"), "{what}: no write reached a replica: {report}");
    }
    // Every transaction pgbench counted is in the new primary's history table.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = rt.block_on(support::client::query_text(c.pg_port(cand), "SELECT count(*) FROM pgbench_history"));
    assert!(history.is_some_and(|n| n.parse::<u64>().unwrap_or(0) > 0), "TPC-B wrote on the new primary");
}

#[test]
fn after_a_crash_failover_reads_and_writes_carry_on() {
    let (mut c, proxy, old) = pool_cluster(3, 4, "  load_balance: on\n  hold_timeout: 40\n", false, Proxy::start);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            c.pg_port(old),
            "CREATE TABLE crash (i int PRIMARY KEY);
             CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(reading_on_replicas(proxy.rw_port).await);
        }
        // The primary crashes (its agent too, so it is not restarted in place) while every client
        // is between transactions.
        c.kill_agent(old);
        c.kill_postgres(old).expect("postmaster pid");
        std::thread::sleep(Duration::from_millis(500));
        for (i, db) in clients.iter().enumerate() {
            let i = i as i32;
            // Held until the new primary is there, then written there: no error, and no write on a
            // replica (which would fail with "read-only transaction").
            db.execute("INSERT INTO crash (i) VALUES ($1)", &[&i]).await.unwrap_or_else(|e| panic!("write {i}: {e}"));
            let row = db.query_one("SELECT count(*) FROM crash WHERE i = $1", &[&i]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), 1, "client {i} reads its own write after the failover");
        }
        let new = c.leader_index().expect("a new leader");
        assert_ne!(new, old);
        let kept = support::client::query_text(c.pg_port(new), "SELECT count(*) FROM crash").await;
        assert_eq!(kept.as_deref(), Some("6"), "every write is on the new primary");
    });
}

/// `select_cnt` of each member by port, from the admin console's `SHOW POOL_NODES`.
async fn select_counts(port: u16) -> std::collections::HashMap<String, u64> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(port).user(support::SUPERUSER).password(support::SUPERUSER_PASSWORD).dbname("rampart");
    let (console, connection) = cfg.connect(tokio_postgres::NoTls).await.expect("the admin console");
    tokio::spawn(connection);
    let rows = console.simple_query("SHOW POOL_NODES").await.unwrap();
    rows.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get("port").unwrap_or_default().to_string(),
                r.get("select_cnt").and_then(|v| v.parse().ok()).unwrap_or(0),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_replica_replaying_further_behind_than_max_lag_time_gets_no_reads() {
    let extra = format!(
        "  load_balance: on\n  read_your_writes: none\n  max_lag_time: 300\n  admin_users: {}\n",
        support::SUPERUSER
    );
    let (c, proxy, leader) = pool_cluster(3, 10, &extra, false, Proxy::start);
    let primary = c.pg_port(leader);
    let lagging = c.pg_port((leader + 1) % c.len());
    let fresh = c.pg_port((leader + 2) % c.len());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            primary,
            "CREATE TABLE ticks (id serial PRIMARY KEY);
             CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        delay_replay(lagging, "1s").await;
        let db = reading_on_replicas(proxy.rw_port).await;
        // The primary writes all along (directly), so the lagging replica stays a second behind.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let w = support::client::connect_superuser(primary).await.unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    w.batch_execute("INSERT INTO ticks DEFAULT VALUES").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = select_counts(proxy.rw_port).await;
        for _ in 0..200 {
            assert!(on_replica(&db, "SELECT where_am_i()").await, "reads still go to a replica");
        }
        let after = select_counts(proxy.rw_port).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
        let sent = |port: u16| after[&port.to_string()] - before[&port.to_string()];
        assert_eq!(sent(lagging), 0, "the lagging replica got no read ({before:?} -> {after:?})");
        assert_eq!(sent(fresh), 200, "the other replica got them all ({before:?} -> {after:?})");
    });
}

/// The backend pids a session's writes ran on, as the primary recorded them.
async fn writers_of(primary: u16, session: &str) -> std::collections::BTreeSet<i32> {
    let direct = support::client::connect_superuser(primary).await.unwrap();
    let rows = direct.query("SELECT DISTINCT pid FROM writes WHERE session = $1", &[&session]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn a_session_mode_client_keeps_its_primary_server_and_reads_on_replicas() {
    // read_your_writes: none, so that a read right after a write may go to a replica.
    let extra = "  load_balance: on\n  read_your_writes: none\n";
    let (c, proxy, leader) = pool_cluster_in("session", 3, 10, extra, false, Proxy::start);
    let primary = c.pg_port(leader);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = rt.block_on(async {
        support::client::sql(
            primary,
            "CREATE TABLE writes (session text, pid int, n int);
             CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        let a = reading_on_replicas(proxy.rw_port).await;
        let b = reading_on_replicas(proxy.rw_port).await;
        // Two sessions write in turns, each with a prepared statement (the extended protocol's
        // named statements, renamed by the proxy), and read in between, on a replica.
        for (name, db) in [("a", &a), ("b", &b)] {
            let insert = db.prepare("INSERT INTO writes VALUES ($1, pg_backend_pid(), $2)").await.unwrap();
            let read = db.prepare("SELECT where_am_i(), count(*) FROM writes").await.unwrap();
            for n in 0..10i32 {
                db.execute(&insert, &[&name, &n]).await.unwrap();
                assert!(db.query_one(&read, &[]).await.unwrap().get::<_, bool>(0), "{name}'s read {n} on a replica");
            }
        }
        let (pids_a, pids_b) = (writers_of(primary, "a").await, writers_of(primary, "b").await);
        assert_eq!(pids_a.len(), 1, "session a wrote through one primary server: {pids_a:?}");
        assert_eq!(pids_b.len(), 1, "session b wrote through one primary server: {pids_b:?}");
        assert_ne!(pids_a, pids_b, "each session has its own primary server");
        (a, b)
    });

    // A switchover between the sessions' transactions: they carry on on the new primary.
    let cand = (leader + 1) % c.len();
    let r = c.request_switchover(leader, cand, Duration::from_secs(90));
    assert_eq!(r.status, 200, "{}", r.body);
    rt.block_on(async {
        for (name, db) in [("a", &a), ("b", &b)] {
            db.execute("INSERT INTO writes VALUES ($1, pg_backend_pid(), 100)", &[&name])
                .await
                .unwrap_or_else(|e| panic!("{name} writes after the switchover: {e}"));
        }
        let direct = support::client::connect_superuser(c.pg_port(cand)).await.unwrap();
        let after = direct.query_one("SELECT count(*) FROM writes WHERE n = 100", &[]).await.unwrap();
        assert_eq!(after.get::<_, i64>(0), 2, "both writes on the new primary");

        // A temporary table lives on the primary: the session's reads stay there from then on.
        a.batch_execute("CREATE TEMP TABLE scratch (i int); INSERT INTO scratch VALUES (1)").await.unwrap();
        assert_eq!(simple_text(&a, "SELECT count(*) FROM scratch").await, "1");
        assert!(!on_replica(&a, "SELECT where_am_i()").await, "a pinned session reads on the primary");
        assert!(on_replica(&b, "SELECT where_am_i()").await, "the other one still reads on a replica");
    });
}

#[test]
fn a_read_runs_on_the_primary_while_its_replica_is_down_but_still_routed() {
    // hold_timeout 2 s: far shorter than the member key's ttl, so waiting for the replica (or for
    // the routes to drop it) would fail the reads.
    let (mut c, proxy, leader) = pool_cluster(2, 4, "  load_balance: on\n  hold_timeout: 2\n", false, Proxy::start);
    let replica = 1 - leader;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            c.pg_port(leader),
            "CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        let db = reading_on_replicas(proxy.rw_port).await;
        c.kill_agent(replica);
        // Backends too: one left to notice its postmaster's death could still answer a read.
        c.crash_postgres(replica).expect("postmaster pid");
        for i in 0..20 {
            let on = simple_text(&db, "SELECT where_am_i()").await;
            assert_eq!(on, "f", "read {i} ran on the primary while the only replica is down");
        }
    });
    assert!(
        c.leader_index() == Some(leader),
        "the primary kept its lock (the test is about the replica's absence, not a failover)"
    );
}

#[test]
fn an_sqlalchemy_application_reads_its_own_writes_through_the_one_port() {
    let admin = format!("  load_balance: on\n  admin_users: {}\n", support::SUPERUSER);
    let (c, txn, leader) = pool_cluster(3, 4, &admin, false, Proxy::start);
    let session = Proxy::start_named(
        &c,
        "proxy-session",
        &format!(
            "  pool_mode: session\n  auth_file: {}\n  auth_user: {}\n  default_pool_size: 4\n{admin}",
            c.dir().join("userlist.txt").display(),
            support::SUPERUSER
        ),
    );
    let primary = c.pg_port(leader);
    let replicas: Vec<String> = (0..c.len()).filter(|&i| i != leader).map(|i| c.pg_port(i).to_string()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::client::sql(
            primary,
            "CREATE FUNCTION where_am_i() RETURNS boolean LANGUAGE sql STABLE AS 'SELECT pg_is_in_recovery()';",
        )
        .await;
        delay_replay(c.pg_port((leader + 1) % c.len()), "500ms").await;
    });
    let script = "proxy_split_sqlalchemy.py";
    let direct = run_script(script, primary, &[]);
    let unexpected: Vec<&String> =
        direct.iter().filter(|l| l.contains("\"unexpected\"") || l.contains("\"stale\"")).collect();
    assert!(unexpected.is_empty(), "{script} fails even directly: {unexpected:?}");
    assert!(direct.iter().any(|l| l.contains("\"stale reads\"")), "{script} printed its checks: {direct:?}");
    for (mode, proxy) in [("transaction", &txn), ("session", &session)] {
        let before = rt.block_on(async {
            reading_on_replicas(proxy.rw_port).await;
            select_counts(proxy.rw_port).await
        });
        let through = run_script(script, proxy.rw_port, &[]);
        if let Some((i, (d, p))) = direct.iter().zip(&through).enumerate().find(|(_, (d, p))| d != p) {
            panic!("{mode} mode: line {} differs through the proxy\n directly: {d}\n    proxy: {p}", i + 1);
        }
        assert_eq!(direct.len(), through.len(), "{mode} mode: as many lines through the proxy\n{through:#?}");
        let after = rt.block_on(select_counts(proxy.rw_port));
        let on_replicas: u64 =
            replicas.iter().map(|p| after.get(p).copied().unwrap_or(0) - before.get(p).copied().unwrap_or(0)).sum();
        eprintln!("{mode} mode: {on_replicas} of the application's statements ran on replicas");
        assert!(on_replicas > 0, "{mode} mode: replicas served some of the application's reads");
    }
}
