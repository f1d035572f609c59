//! Stories of a leader going away: crashed (agent and postmaster killed together), stopped
//! cleanly (SIGTERM to its agent), and a postmaster that dies under a living agent. Each story
//! checks what an operator would: who leads afterwards, on which timeline, whether the data is
//! there, and whether the old node came back as a streaming replica.
//!
//! Timings are printed for the record; precise numbers come from `bench/failover`. The
//! assertions only check the properties (for example "faster than the lease could expire").

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, timeline, wait_healthy};

const TTL: Duration = Duration::from_secs(10);

/// Freezes the leader's walsenders so that what it commits next never reaches a replica:
/// its WAL then really diverges from the one that will be promoted.
async fn freeze_walsenders(port: u16) -> Vec<u32> {
    let db = support::connect_superuser(port).await.unwrap();
    let pids: Vec<i32> =
        db.query("SELECT pid FROM pg_stat_replication", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for &p in &pids {
        support::process::signal(p as u32, Signal::SIGSTOP);
    }
    pids.into_iter().map(|p| p as u32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_leader_is_replaced_once_and_rejoins_through_pg_rewind() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    support::client::sql(c.pg_port(old), "CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await;
    assert!(support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (0..3).all(|i| {
            support::health::status(&c, i)
                .is_some_and(|s| s["xlog"]["replayed_location"].as_u64().is_some() || i == old)
        })
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The old leader commits a row no replica will ever receive, then crashes hard.
    let frozen = freeze_walsenders(c.pg_port(old)).await;
    support::client::sql(c.pg_port(old), "INSERT INTO story VALUES (666)").await;
    let crash = Instant::now();
    c.kill_agent(old);
    c.kill_postgres(old).expect("postmaster pid");
    for p in frozen {
        support::process::signal(p, Signal::SIGKILL);
    }

    // Exactly one new leader, within the lease plus a few seconds.
    let new = support::wait_until(TTL + Duration::from_secs(10), Duration::from_millis(100), || {
        c.leader_index().is_some_and(|l| l != old)
    });
    let took = crash.elapsed();
    println!("crash failover: new leader after {took:?} (ttl {TTL:?})");
    assert!(new, "no new leader within ttl + 10 s");
    let new = c.leader_index().unwrap();
    assert!(took < TTL + Duration::from_secs(5), "new leader only after {took:?}");
    let primaries = c.wait_for_single_primary(Duration::from_secs(15)).await;
    assert_eq!(primaries, Some(new), "the lock holder is the only primary");
    assert!(
        support::wait_until(Duration::from_secs(5), Duration::from_millis(100), || timeline(&c, new) == Some(2)),
        "the new leader runs on timeline 2, not {:?}",
        timeline(&c, new)
    );
    let other = (0..3).find(|&i| i != old && i != new).unwrap();
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || is_streaming_replica(
            &c,
            other,
            Some(2)
        )),
        "the other replica follows the new leader on timeline 2"
    );
    support::client::sql(c.pg_port(new), "INSERT INTO story VALUES (2)").await;

    // The old leader comes back: its diverged WAL is rewound and it streams on timeline 2.
    c.start_agent(old);
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || is_streaming_replica(
            &c,
            old,
            Some(2)
        )),
        "old leader did not rejoin as a streaming replica on timeline 2"
    );
    let log = std::fs::read_to_string(c.log_path(old)).unwrap();
    assert!(log.contains("running pg_rewind"), "the rejoin went through pg_rewind");
    assert!(
        support::wait_until_async(Duration::from_secs(20), Duration::from_millis(200), || async {
            support::client::story_ids(c.pg_port(old)).await == vec![1, 2]
        })
        .await,
        "after the rewind the old leader has the new leader's rows and not its own lost one: {:?}",
        support::client::story_ids(c.pg_port(old)).await
    );
    assert_eq!(c.leader_index(), Some(new), "the rejoin did not disturb the leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_of_the_leader_hands_over_without_waiting_for_the_lease() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    support::client::sql(c.pg_port(old), "CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await;

    let stop = Instant::now();
    c.agent(old).sigterm();
    let mut new = None;
    while new.is_none() && stop.elapsed() < TTL {
        for i in (0..3).filter(|&i| i != old) {
            if support::is_in_recovery(c.pg_port(i)).await == Some(false) {
                new = Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = new.is_some();
    let took = stop.elapsed();
    println!("clean stop: new writable primary after {took:?} (ttl {TTL:?})");
    assert!(found, "no new primary within the lease time");
    assert!(took < TTL / 2, "handover took {took:?}: it waited for the lease");
    let new = new.unwrap();

    let status = c.agent_mut(old).wait_exit(Duration::from_secs(30)).expect("old agent exits");
    assert!(status.success(), "agent exit status {status:?}");
    assert!(!c.agent(old).postmaster_running(), "the old leader's PostgreSQL was stopped");
    assert_eq!(c.wait_for_leader(Duration::from_secs(5)), Some(new));
    assert_eq!(support::client::story_ids(c.pg_port(new)).await, vec![1], "nothing acknowledged was lost");
    let other = (0..3).find(|&i| i != old && i != new).unwrap();
    assert!(support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || is_streaming_replica(
        &c,
        other,
        Some(2)
    )));

    // Restarted, the old leader follows the new one.
    c.start_agent(old);
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || is_streaming_replica(
            &c,
            old,
            Some(2)
        )),
        "old leader did not rejoin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_postmaster_is_restarted_in_place_and_primary_check_fails_meanwhile() {
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let api = c.api_port(leader);
    assert_eq!(support::http_status(api, "GET", "/primary"), 200);

    // Watch /primary as HAProxy would, but continuously, from before the kill until well after.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(support::http_status(api, "GET", "/primary"));
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    c.kill_postgres(leader).expect("postmaster pid");

    let back = support::wait_until_async(TTL, Duration::from_millis(50), || async {
        support::is_in_recovery(c.pg_port(leader)).await == Some(false)
    })
    .await;
    let took = killed.elapsed();
    println!("postmaster restarted in place after {took:?}");
    assert!(back, "PostgreSQL did not come back as primary");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    // 200 before the kill, then 503 while PostgreSQL was down (Patroni keeps answering 200 then
    // and HAProxy sends clients into a dead server), then 200 again.
    let first_503 = seen.iter().position(|&s| s == 503).expect("/primary never answered 503 while PostgreSQL was down");
    assert!(seen[..first_503].iter().all(|&s| s == 200), "{seen:?}");
    assert_eq!(seen.last(), Some(&200), "{seen:?}");
    assert!(took < TTL / 2, "restart took {took:?}");
    assert!(support::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        support::http_status(api, "GET", "/primary") == 200
    }));
    assert_eq!(c.leader_index(), Some(leader), "same leader");
    assert_eq!(timeline(&c, leader), Some(1), "same timeline: no promotion happened");
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    assert!(support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        replicas.iter().all(|&r| is_streaming_replica(&c, r, Some(1)))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_whose_agent_dies_is_not_joined_by_a_second_primary() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    support::client::sql(c.pg_port(old), "CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await;

    // Only the agent dies: PostgreSQL keeps running and its replicas keep streaming from it.
    c.kill_agent(old);
    assert!(
        support::wait_until(TTL + Duration::from_secs(5), Duration::from_millis(200), || c.leader_index().is_none()),
        "the dead agent's lease expires"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.primaries_by_sql().await, vec![old], "no replica was promoted next to the live primary");
    support::client::sql(c.pg_port(old), "INSERT INTO story VALUES (2)").await;

    // Its agent comes back and takes the lock again as the running primary: nothing was lost.
    c.start_agent(old);
    assert_eq!(wait_healthy(&c, Duration::from_secs(60)), Some(old));
    assert_eq!(timeline(&c, old), Some(1), "no promotion happened anywhere");
    assert_eq!(support::client::story_ids(c.pg_port(old)).await, vec![1, 2]);
}
