//! Story: clients reach the cluster through HAProxy, configured with the `listen postgres`
//! section of seed 000's guide: a TCP proxy that asks every node's REST API `OPTIONS /` over HTTP
//! and only sends clients to the one answering 200, the primary. When the primary crashes, the
//! guide promises that clients end up on the new primary without anyone touching HAProxy.
//!
//! The guide's HAProxy configuration is kept as it is, except: it binds 127.0.0.1 on a free port
//! instead of *:5432, each server is 127.0.0.1 with its node's PostgreSQL port and `check port`
//! its node's REST API port, and there is no `log` to a syslog address.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::haproxy::Haproxy;
use support::health::wait_healthy;

const TTL: Duration = Duration::from_secs(10);

/// Seed 000's haproxy.cfg (global, defaults and `listen postgres`), on loopback.
fn seed_haproxy_cfg(c: &Cluster, bind_port: u16) -> String {
    let mut cfg = String::from(
        "# Seed 000's HAProxy configuration, moved to loopback for the Rampart e2e tests.\n\
         global\n    maxconn 100\n\n\
         defaults\n    mode tcp\n    retries 2\n    timeout client 30m\n    timeout connect 4s\n    \
         timeout server 30m\n    timeout check 5s\n\n",
    );
    cfg.push_str("listen postgres\n");
    cfg.push_str(&format!("    bind 127.0.0.1:{bind_port}\n"));
    cfg.push_str("    option httpchk\n");
    cfg.push_str("    http-check expect status 200\n");
    cfg.push_str("    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n");
    for i in 0..c.len() {
        cfg.push_str(&format!(
            "    server postgres{:02} 127.0.0.1:{} maxconn 100 check port {}\n",
            i + 1,
            c.pg_port(i),
            c.api_port(i)
        ));
    }
    cfg
}

/// Where a new connection through HAProxy lands: `(in recovery, server port)`, or the error.
async fn land(port: u16) -> Result<(bool, u16), String> {
    let attempt = async {
        let db = support::connect_superuser(port).await.map_err(|e| e.to_string())?;
        let row =
            db.query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[]).await.map_err(|e| e.to_string())?;
        Ok((row.get::<_, bool>(0), row.get::<_, i32>(1) as u16))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_the_seed_config_follows_the_primary_through_a_crash_failover() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");

    let port = support::free_port();
    let cfg_path = c.dir().join("haproxy.cfg");
    std::fs::write(&cfg_path, seed_haproxy_cfg(&c, port)).unwrap();
    // Declared after the cluster: dropped (killed) first.
    let mut haproxy = Haproxy::start(&cfg_path, &c.dir().join("haproxy.log"));
    assert!(haproxy.wait_listening(port, Duration::from_secs(10)), "haproxy does not listen on {port}");

    // HAProxy starts with every server up until its first checks: wait until new connections
    // keep landing on the leader (only it answers OPTIONS / with 200).
    let mut streak = 0;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while streak < 3 && Instant::now() < deadline {
        let got = land(port).await;
        streak = if got == Ok((false, c.pg_port(old))) { streak + 1 } else { 0 };
        seen.push(got);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let routed = streak >= 3;
    assert!(routed, "connections through HAProxy do not settle on the leader {}: {seen:?}", c.name(old));
    assert_eq!(land(port).await, Ok((false, c.pg_port(old))), "through HAProxy: the leader, writable");
    let db = support::connect_superuser(port).await.unwrap();
    db.batch_execute("CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await.unwrap();
    drop(db);

    // The leader crashes: agent and postmaster together.
    let crash = Instant::now();
    c.kill_agent(old);
    c.kill_postgres(old).expect("postmaster pid");
    let elected = support::wait_until(TTL + Duration::from_secs(20), Duration::from_millis(100), || {
        c.leader_index().is_some_and(|l| l != old)
    });
    assert!(elected, "no new leader within ttl + 20 s");
    let elected_at = Instant::now();
    let new = c.leader_index().unwrap();
    println!("new leader {} elected {:?} after the crash", c.name(new), crash.elapsed());

    // Within 60 s, a new connection through HAProxy lands on the new leader, writable. Until then
    // clients may be refused, but none may be handed a read-only server.
    let mut failures = 0;
    let mut read_only = Vec::new();
    let mut switched = false;
    while !switched && elected_at.elapsed() < Duration::from_secs(60) {
        match land(port).await {
            Ok((false, p)) if p == c.pg_port(new) => switched = true,
            Ok((true, p)) => read_only.push((elected_at.elapsed(), p)),
            Ok(_) | Err(_) => failures += 1,
        }
        if !switched {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let after_election = elected_at.elapsed();
    println!(
        "HAProxy switched to {} {after_election:?} after the election ({:?} after the crash; \
         {failures} refused connection attempts meanwhile)",
        c.name(new),
        crash.elapsed()
    );
    assert!(switched, "HAProxy still does not route to the new leader {} 60 s after its election", c.name(new));
    assert!(read_only.is_empty(), "HAProxy handed out read-only servers (time after election, port): {read_only:?}");
    let db = support::connect_superuser(port).await.unwrap();
    db.batch_execute("INSERT INTO story VALUES (2)").await.expect("write through HAProxy after the failover");
    let ids: Vec<i32> =
        db.query("SELECT id FROM story ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(haproxy.is_running(), "haproxy died");
}
