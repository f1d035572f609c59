//! Stories of planned leadership changes: a switchover to a named candidate through the REST API,
//! one through Patroni's own `patronictl`, one scheduled for a time, one that waits for a proxy
//! to finish its transactions on the old primary, a manual failover when the leader is dead, and
//! a `pre_promote` script that vetoes a promotion.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_core::keys::ClusterPrefix;
use rampart_core::ProxyReport;
use rampart_dcs::{EtcdDcs, EtcdOptions};

use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, timeline, wait_healthy};

fn post(c: &Cluster, i: usize, path: &str, body: &str) -> (u16, String) {
    let r =
        support::client::http_request_with_timeout(c.api_port(i), "POST", path, Some(body), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (r.status, r.body)
}

fn wait_streaming(c: &Cluster, i: usize, tl: u64) {
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(200), || is_streaming_replica(
            c,
            i,
            Some(tl)
        )),
        "{} does not stream on timeline {tl}",
        c.name(i)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_named_candidate_through_the_rest_api() {
    let c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    support::client::sql(c.pg_port(old), "CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await;
    let cand = (0..3).find(|&i| i != old).unwrap();
    let other = (0..3).find(|&i| i != old && i != cand).unwrap();

    let started = Instant::now();
    let body = format!(r#"{{"leader": "{}", "candidate": "{}"}}"#, c.name(old), c.name(cand));
    let (status, text) = post(&c, old, "/switchover", &body);
    println!("switchover answered {status} {text:?} after {:?}", started.elapsed());
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(c.name(cand)), "{text}");
    assert_eq!(c.leader_index(), Some(cand));
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(10)).await, Some(cand));
    assert!(support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || timeline(&c, cand) == Some(2)));
    wait_streaming(&c, old, 2);
    wait_streaming(&c, other, 2);
    support::client::sql(c.pg_port(cand), "INSERT INTO story VALUES (2)").await;
    assert!(
        support::wait_until_async(Duration::from_secs(10), Duration::from_millis(100), || async {
            support::client::story_ids(c.pg_port(old)).await == vec![1, 2]
        })
        .await,
        "the old leader follows the new one and lost nothing"
    );
    assert!(
        c.etcd().get(&format!("{}failover", c.dcs_prefix())).is_none_or(|v| v == "{}" || v.is_empty()),
        "request cleared"
    );

    // Refused: a switchover naming a leader that is not the leader.
    let body = format!(r#"{{"leader": "{}", "candidate": "{}"}}"#, c.name(old), c.name(other));
    let (status, _) = post(&c, cand, "/switchover", &body);
    assert_eq!(status, 412);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_switchover_drives_rampart() {
    let c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let cand = (0..3).find(|&i| i != old).unwrap();
    let out = c.patronictl(&["switchover", "--candidate", c.name(cand), "--force"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || c.leader_index() == Some(cand)),
        "patronictl's switchover made {} the leader",
        c.name(cand)
    );
    wait_streaming(&c, old, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_switchover_fires_at_its_time() {
    let c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let cand = (0..3).find(|&i| i != old).unwrap();
    // Whole seconds: the request carries no fraction, so this is exactly the time asked for.
    let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 8).unwrap();
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}", "scheduled_at": "{}"}}"#,
        c.name(old),
        c.name(cand),
        at.strftime("%Y-%m-%dT%H:%M:%S%:z")
    );
    let (status, text) = post(&c, old, "/switchover", &body);
    assert_eq!(status, 202, "{text}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(c.leader_index(), Some(old), "nothing happens before the scheduled time");
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || c.leader_index() == Some(cand)),
        "the switchover happened at its time"
    );
    let late = jiff::Timestamp::now().duration_since(at);
    println!("scheduled switchover done {late:?} after its time");
    assert!(late >= jiff::SignedDuration::ZERO, "not before its time");
}

/// The switchover's drain (`crates/core/src/drain.rs`) through real agents and etcd, with the
/// proxy played by its etcd side alone: while a registered proxy has not drained the old leader,
/// the leader keeps its lock and PostgreSQL; once the proxy's report names it, the switchover
/// goes on at once (woken by the watch), long before the proxy's bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_waits_for_a_registered_proxy_to_finish_on_the_old_primary() {
    let c = Cluster::start(2, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let cand = 1 - old;
    let prefix = c.dcs_prefix();
    let (namespace, scope) = prefix.trim_matches('/').rsplit_once('/').expect("/<namespace>/<scope>/");
    let options =
        EtcdOptions { endpoints: vec![c.etcd().endpoint()], op_timeout: Duration::from_secs(2), ..Default::default() };
    let dcs = EtcdDcs::connect(options, ClusterPrefix::new(namespace, scope), "rampart-proxy".into(), 30)
        .await
        .expect("etcd settings");
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(3);
    let busy = ProxyReport { drain_timeout: Some(50), drained: None };
    let proxy = Arc::new(dcs.register_proxy("app-1", &busy, 10, deadline()).await.expect("registered"));
    let keeper = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = proxy.keep_alive(deadline()).await;
            }
        }
    });

    let request = format!(r#"{{"leader":"{}","member":"{}"}}"#, c.name(old), c.name(cand));
    c.etcd().put(&format!("{prefix}failover"), &request);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(c.leader_index(), Some(old), "the leader waits for the proxy");
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(2)).await, Some(old), "its PostgreSQL still runs");
    let log = std::fs::read_to_string(c.log_path(old)).unwrap();
    assert!(log.contains("waiting for 1 proxy to finish their transactions on me (app-1)"), "{log}");

    let drained = ProxyReport { drain_timeout: Some(50), drained: Some(c.name(old).into()) };
    let told = Instant::now();
    assert!(proxy.update(&drained, deadline()).await.expect("report written"));
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(100), || c.leader_index() == Some(cand)),
        "the switchover went on once the proxy drained (leader: {:?})",
        c.leader_name()
    );
    println!("switchover done {:?} after the proxy drained", told.elapsed());
    assert!(told.elapsed() < Duration::from_secs(20), "not at the proxy's 50 s bound");
    wait_streaming(&c, old, 2);
    keeper.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_to_a_named_member_when_the_leader_is_dead() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let cand = (0..3).rev().find(|&i| i != old).unwrap();
    c.kill_agent(old);
    c.kill_postgres(old);
    let (status, text) = post(&c, cand, "/failover", &format!(r#"{{"candidate": "{}"}}"#, c.name(cand)));
    println!("failover answered {status} {text:?}");
    assert!(
        support::wait_until(Duration::from_secs(40), Duration::from_millis(200), || c.leader_index() == Some(cand)),
        "the named member took over (leader: {:?})",
        c.leader_name()
    );
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(10)).await, Some(cand));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_promote_failure_blocks_promotion_and_the_next_member_takes_over() {
    // node1 is preferred (higher failover_priority) but its pre_promote script refuses.
    let opts = ClusterOptions::default().tweak(|i, cfg| {
        if i == 1 {
            cfg.tag("failover_priority", "10").pg_setting("pre_promote", "'exit 1'")
        } else {
            cfg
        }
    });
    let mut c = Cluster::start(3, opts);
    let first = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    if first == 1 {
        // The vetoing node bootstrapped (no promotion, so no veto); move leadership away first.
        let (status, text) = post(&c, 1, "/switchover", r#"{"leader": "node1", "candidate": "node0"}"#);
        assert_eq!(status, 200, "{text}");
        wait_streaming(&c, 1, 2);
    }
    let old = c.leader_index().unwrap();
    c.kill_agent(old);
    c.kill_postgres(old);
    let winner = (0..3).find(|&i| i != old && i != 1).unwrap();
    assert!(
        support::wait_until(Duration::from_secs(40), Duration::from_millis(200), || c.leader_index() == Some(winner)),
        "the member without a veto took over (leader: {:?})",
        c.leader_name()
    );
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    assert!(log.contains("pre_promote"), "node1 tried and was refused by pre_promote");
    // One promotion more when node1 had bootstrapped and a switchover moved leadership first.
    let tl = if first == 1 { 3 } else { 2 };
    wait_streaming(&c, 1, tl);
}
