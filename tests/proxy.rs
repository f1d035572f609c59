//! Stories of `rampart proxy`: clients on the read-write port reach the leader and on the
//! read-only port a replica, authentication and cancel requests pass through, and across a
//! switchover and a crash the proxy fences the old primary and holds new clients until the new
//! leader is there.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::proxy::Proxy;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// `(pg_is_in_recovery(), inet_server_port())` of a session.
async fn where_am_i(db: &Client) -> (bool, u16) {
    let row = db.query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[]).await.expect("where am i");
    (row.get(0), row.get::<_, i32>(1) as u16)
}

async fn connect(port: u16) -> Client {
    support::connect_superuser(port).await.unwrap_or_else(|e| panic!("connect through the proxy on {port}: {e}"))
}

fn replica_ports(c: &Cluster, leader: usize) -> Vec<u16> {
    (0..c.len()).filter(|&i| i != leader).map(|i| c.pg_port(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_authenticates_cancels_and_follows_a_switchover() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let proxy = Proxy::start(&c, "");

    // (a) read-write lands on the leader, read-only on a replica (once the proxy has seen the
    // replicas streaming); a write through rw reads back through ro.
    let rw = connect(proxy.rw_port).await;
    assert_eq!(where_am_i(&rw).await, (false, c.pg_port(leader)));
    let replicas = replica_ports(&c, leader);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.len() < replicas.len() && Instant::now() < deadline {
        let ro = connect(proxy.ro_port).await;
        let (in_recovery, port) = where_am_i(&ro).await;
        if in_recovery && replicas.contains(&port) && !seen.contains(&port) {
            seen.push(port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), replicas.len(), "read-only connections reach every replica (round robin); saw {seen:?}");
    rw.batch_execute("CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await.unwrap();
    assert!(
        support::wait_until_async(Duration::from_secs(10), Duration::from_millis(100), || async {
            let ro = connect(proxy.ro_port).await;
            ro.query("SELECT id FROM story", &[]).await.is_ok_and(|rows| rows.len() == 1)
        })
        .await,
        "the write is read back through the read-only port"
    );

    // Garbage closes only its own connection, with a protocol-violation error.
    {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", proxy.rw_port)).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(b"\x00\x00\x00\x04garbage").unwrap();
        let mut answer = Vec::new();
        let _ = raw.read_to_end(&mut answer);
        assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
        assert!(String::from_utf8_lossy(&answer).contains("08P01"), "{answer:?}");
    }
    assert_eq!(where_am_i(&rw).await, (false, c.pg_port(leader)), "other sessions are undisturbed");

    // (b) SCRAM passes through: the right password works (above), a wrong one is refused by
    // PostgreSQL itself.
    let Err(err) = support::connect(proxy.rw_port, support::SUPERUSER, "wrong-password").await else {
        panic!("a wrong password was accepted through the proxy");
    };
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");

    // (c) a cancel request sent to the proxy cancels the query on the backend.
    let sleeper = connect(proxy.rw_port).await;
    let token = sleeper.cancel_token();
    let started = Instant::now();
    let query = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.expect("cancel request");
    let res = tokio::time::timeout(Duration::from_secs(10), query).await.expect("cancelled in time").unwrap();
    let err = res.expect_err("the sleep was cancelled");
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // (d) switchover: the session on the old primary gets an error, new read-write connections
    // reach the new leader.
    let old_session = connect(proxy.rw_port).await;
    assert_eq!(where_am_i(&old_session).await.1, c.pg_port(leader));
    let cand = (0..3).find(|&i| i != leader).unwrap();
    let r = c.request_switchover(leader, cand, Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.body);
    let err = old_session.simple_query("SELECT 1").await.expect_err("the old primary's session is closed");
    println!("old session: {err}");
    assert!(
        support::wait_until_async(Duration::from_secs(15), Duration::from_millis(200), || async {
            let rw = connect(proxy.rw_port).await;
            where_am_i(&rw).await == (false, c.pg_port(cand))
        })
        .await,
        "new read-write connections reach the new leader"
    );
    let rw = connect(proxy.rw_port).await;
    rw.batch_execute("INSERT INTO story VALUES (2)").await.expect("write through the proxy after the switchover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_is_held_through_a_crash_failover() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let proxy = Proxy::start(&c, "  hold_timeout: 40\n");
    let rw = connect(proxy.rw_port).await;
    assert_eq!(where_am_i(&rw).await, (false, c.pg_port(old)));

    let crash = Instant::now();
    c.kill_agent(old);
    c.kill_postgres(old).expect("postmaster pid");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Connects during the gap: held, then served by the new leader.
    let port = proxy.rw_port;
    let held = tokio::spawn(async move {
        let db = support::connect_superuser(port).await?;
        let at = where_am_i(&db).await;
        Ok::<_, tokio_postgres::Error>(at)
    });
    let at = tokio::time::timeout(Duration::from_secs(45), held)
        .await
        .expect("the held client got an answer within the hold timeout")
        .unwrap()
        .expect("the held client was connected, not refused");
    println!("held client served after {:?} by port {}", crash.elapsed(), at.1);
    let new = c.leader_index().expect("a new leader");
    assert_ne!(new, old);
    assert_eq!(at, (false, c.pg_port(new)));
    assert!(rw.simple_query("SELECT 1").await.is_err(), "the session on the crashed primary is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stop_while_etcd_is_unreachable_and_resume_after() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let proxy = Proxy::start(&c, "  hold_timeout: 2\n");
    let rw = connect(proxy.rw_port).await;
    assert_eq!(where_am_i(&rw).await, (false, c.pg_port(leader)));

    let stopped = Instant::now();
    c.etcd_mut().stop();
    // ttl is 10 s: after that the proxy's view may be out of date, so it refuses to route writes
    // (here: held 2 s, then refused with 57P03).
    let refused = support::wait_until_async(Duration::from_secs(16), Duration::from_millis(500), || async {
        match support::connect_superuser(proxy.rw_port).await {
            Err(e) => e.code() == Some(&SqlState::CANNOT_CONNECT_NOW),
            Ok(_) => false,
        }
    })
    .await;
    println!("writes refused {:?} after etcd stopped", stopped.elapsed());
    assert!(refused, "the proxy kept routing writes with etcd gone");
    // The leader's agent stops its own PostgreSQL once etcd is gone, which can refuse clients
    // first; the proxy must in any case drop its read-write route within ttl on its own.
    let fenced = support::wait_until(Duration::from_secs(14), Duration::from_millis(200), || {
        std::fs::read_to_string(proxy.log_path()).is_ok_and(|log| {
            log.contains("reading the cluster from the DCS") && log.contains("no primary: read-write clients are held")
        })
    });
    println!("proxy dropped its read-write route {:?} after etcd stopped", stopped.elapsed());
    assert!(fenced, "the proxy kept its read-write route with etcd gone for longer than ttl");
    assert!(stopped.elapsed() <= Duration::from_millis(10_500), "within ttl (10 s): {:?}", stopped.elapsed());
    assert!(rw.simple_query("SELECT 1").await.is_err(), "the open read-write session was closed");

    c.etcd_mut().start_again();
    assert!(
        support::wait_until_async(Duration::from_secs(60), Duration::from_millis(500), || async {
            match support::connect_superuser(proxy.rw_port).await {
                Ok(db) => db.query_one("SELECT pg_is_in_recovery()", &[]).await.is_ok_and(|r| !r.get::<_, bool>(0)),
                Err(_) => false,
            }
        })
        .await,
        "writes are routed again once etcd is back"
    );
}

#[test]
fn a_config_without_a_proxy_section_is_refused() {
    let dir = support::TestDir::new("proxy-config");
    let path = dir.join("node.yml");
    std::fs::write(
        &path,
        "scope: pg\nname: n1\nrestapi: {listen: '127.0.0.1:8008'}\netcd3: {host: '127.0.0.1:2379'}\n\
         postgresql: {listen: '127.0.0.1:5432', data_dir: /tmp/none, authentication: {replication: {username: r}}}\n",
    )
    .unwrap();
    let out = support::rampart(["proxy", "-c", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("node.yml: proxy: missing required section"), "{err}");
}
