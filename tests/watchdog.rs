//! The story of `watchdog.mode: required` on a member whose watchdog cannot be used: it serves as
//! a replica, says `watchdog_failed` in its `/patroni` answer, is refused as a switchover
//! candidate, and never takes the leader lock, even when it is the only member left; the cluster
//! waits for a member that may lead. (A member that can arm a real `/dev/watchdog` is not
//! testable on a machine without one; the arming rule itself is tested in the core and the
//! seeded simulation.)

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::ctl::{ctl, stderr, stdout};
use support::health::{is_streaming_replica, status, wait_healthy};

const TTL: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_required_watchdog_is_unusable_never_leads() {
    // node0 starts first and bootstraps; node2 requires a watchdog device that does not exist.
    let opts = ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(|i, cfg| match i {
        2 => cfg.extra_yaml("watchdog:\n  mode: required\n  device: /nonexistent/rampart-watchdog\n"),
        _ => cfg,
    });
    let mut c = Cluster::start(3, opts);
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads, node1 and node2 stream");

    // It says so where Patroni does, and only it.
    let failed = |i| status(&c, i).and_then(|s| s.get("watchdog_failed").cloned());
    assert_eq!(failed(2), Some(serde_json::json!(true)), "{:?}", status(&c, 2));
    assert_eq!(failed(1), None);

    // A switchover to it is refused, and nothing changes.
    let o = ctl(c.config_path(0), &["switchover", "--candidate", "node2", "--force"]);
    assert!(!o.status.success(), "switchover to node2 succeeded: {}", stdout(&o));
    // As in Patroni, the answer is generic and the leader's log names the reason.
    assert!(stderr(&o).contains("no good candidates have been found"), "{}", stderr(&o));
    let leader_log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    assert!(leader_log.contains("member node2 cannot take over: not watchdog capable"), "node0's log names the reason");
    assert_eq!(c.leader_index(), Some(0));

    // node1 is stopped cleanly and the leader crashes: node2, the only member left and fully
    // caught up, still does not take the lock.
    assert!(c.stop_agent(1, Duration::from_secs(60)), "node1's agent stopped");
    c.kill_agent(0);
    c.kill_postgres(0).expect("node0's postmaster");
    let leaderless =
        support::wait_until(TTL + Duration::from_secs(5), Duration::from_millis(200), || c.leader_index().is_none());
    assert!(leaderless, "node0's lock expired");
    let took_over = support::wait_until(TTL * 2, Duration::from_millis(250), || c.leader_index().is_some());
    assert!(!took_over, "{:?} took the lock", c.leader_name());
    assert_eq!(c.primaries_by_sql().await, Vec::<usize>::new(), "no primary anywhere");
    let log = std::fs::read_to_string(c.log_path(2)).unwrap_or_default();
    assert!(
        log.contains("watchdog is required but cannot be used (/nonexistent/rampart-watchdog is not writable"),
        "node2's log says why it does not lead:\n{}",
        support::tail_file(c.log_path(2), 30)
    );

    // node1, which may lead, comes back and takes over; node2 follows it.
    c.start_agent(1);
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || c.leader_index() == Some(1)),
        "node1 took over (leader: {:?})",
        c.leader_name()
    );
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || is_streaming_replica(&c, 2, None)),
        "node2 streams from the new leader"
    );
    assert_eq!(c.primaries_by_sql().await, vec![1]);
}
