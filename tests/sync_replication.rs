//! Stories of synchronous replication (`synchronous_mode`), told the way an operator checks it:
//! what the leader's PostgreSQL waits for (`SHOW synchronous_standby_names`), what the DCS `sync`
//! key says may take over, and what happens to commits and failovers.
//!
//! * Quorum commit with two synchronous standbys: `ANY 2` of both replicas; one replica stops and
//!   the leader drops to `ANY 1` of the other (commits keep flowing); it comes back and `ANY 2`
//!   returns.
//! * `synchronous_mode: on`: when the leader crashes, the synchronous standby takes over, never the
//!   asynchronous one, even though the asynchronous one has the higher failover priority.
//! * An operator's failover to the asynchronous standby is refused unless forced; `--force` warns
//!   what it risks, and the candidate then leads.
//! * `maximum_lag_on_syncnode`: a synchronous standby whose WAL receiver froze is replaced while a
//!   large commit waits for it, so the commit completes; a member tagged `nosync` (by a reload) is
//!   never chosen.
//! * `synchronous_mode_strict`: with both replicas gone a commit waits instead of going through
//!   unreplicated, and it completes once a replica is back.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

/// `PATCH /config` on node `i`.
fn patch_config(c: &Cluster, i: usize, body: &str) {
    let r = support::client::http_request_with_timeout(
        c.api_port(i),
        "PATCH",
        "/config",
        Some(body),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("PATCH /config: {e}"));
    assert_eq!(r.status, 200, "PATCH /config {body}: {}", r.body);
}

/// `SHOW synchronous_standby_names` on node `i`.
async fn standby_names(c: &Cluster, i: usize) -> Option<String> {
    let db = support::connect_superuser(c.pg_port(i)).await.ok()?;
    db.query_one("SHOW synchronous_standby_names", &[]).await.ok().map(|r| r.get(0))
}

/// The DCS `sync` key, parsed.
fn sync_key(c: &Cluster) -> Option<Value> {
    c.etcd().get(&format!("{}sync", c.dcs_prefix())).and_then(|v| serde_json::from_str(&v).ok())
}

/// `(leader, sync_standby, quorum)` of the `sync` key.
fn sync_state(c: &Cluster) -> Option<(String, String, u64)> {
    let k = sync_key(c)?;
    Some((
        k["leader"].as_str()?.to_string(),
        k["sync_standby"].as_str().unwrap_or_default().to_string(),
        k["quorum"].as_u64().unwrap_or(0),
    ))
}

/// Whether, within `limit`, the leader `l` applies `names` and the `sync` key is
/// `(l, voters, quorum)`.
async fn sync_becomes(c: &Cluster, l: usize, names: &str, voters: &str, quorum: u64, limit: Duration) -> bool {
    let want = Some((c.name(l).to_string(), voters.to_string(), quorum));
    support::wait_until_async(limit, Duration::from_millis(250), || async {
        standby_names(c, l).await.as_deref() == Some(names) && sync_state(c) == want
    })
    .await
}

/// Waits until the leader `l` applies `names` and the `sync` key is `(l, voters, quorum)`.
async fn wait_for_sync(c: &Cluster, l: usize, names: &str, voters: &str, quorum: u64, limit: Duration) {
    let want = Some((c.name(l).to_string(), voters.to_string(), quorum));
    let ok = sync_becomes(c, l, names, voters, quorum, limit).await;
    assert!(
        ok,
        "wanted synchronous_standby_names {names:?} and sync key {want:?}; have {:?} and {:?}",
        standby_names(c, l).await,
        sync_state(c)
    );
}

/// Inserts `id` into `story` on node `i`, giving up after `limit`: `Some(result)` if the commit
/// returned, `None` if it was still waiting.
async fn insert_within(c: &Cluster, i: usize, id: i32, limit: Duration) -> Option<Result<u64, String>> {
    let db = support::connect_superuser(c.pg_port(i)).await.expect("connect");
    tokio::time::timeout(limit, db.execute("INSERT INTO story VALUES ($1)", &[&id]))
        .await
        .ok()
        .map(|r| r.map_err(|e| e.to_string()))
}

/// Node `i`'s health check `path` status.
fn check(c: &Cluster, i: usize, path: &str) -> u16 {
    support::http_status(c.api_port(i), "GET", path)
}

/// Node `i`'s health check `path` status once it answers 200, or after 5 s whatever it answers:
/// a member's own checks follow the `sync` key at its next cycle, a moment after the leader's.
fn check_settled(c: &Cluster, i: usize, path: &str) -> u16 {
    support::wait_until(Duration::from_secs(5), Duration::from_millis(200), || check(c, i, path) == 200);
    check(c, i, path)
}

/// Node 0 bootstraps (the others start a little later), so the leader is known.
fn three_nodes(tweak: impl Fn(usize, support::NodeConfig) -> support::NodeConfig + 'static) -> Cluster {
    Cluster::start(3, ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(tweak))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_commit_follows_the_replicas_as_they_come_and_go() {
    let mut c = three_nodes(|_, cfg| cfg);
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");
    support::client::sql(c.pg_port(0), "CREATE TABLE story (id int PRIMARY KEY)").await;
    // An operator's own synchronous_standby_names applies while Rampart does not manage it...
    patch_config(&c, 0, r#"{"postgresql": {"parameters": {"synchronous_standby_names": "*"}}}"#);
    let own = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        standby_names(&c, 0).await.as_deref() == Some("*")
    })
    .await;
    assert!(own, "the configured value applies in asynchronous mode: {:?}", standby_names(&c, 0).await);

    // ...and is overridden while synchronous_mode is on.
    patch_config(&c, 0, r#"{"synchronous_mode": "quorum", "synchronous_node_count": 2}"#);
    // Any two of the two replicas acknowledge each commit; both may vote in a leader race, and
    // as each holds every commit, none needs another's vote (quorum 0).
    wait_for_sync(&c, 0, r#"ANY 2 ("node1","node2")"#, "node1,node2", 0, Duration::from_secs(30)).await;
    assert_eq!(insert_within(&c, 0, 1, Duration::from_secs(10)).await, Some(Ok(1)));
    assert_eq!(check_settled(&c, 1, "/quorum"), 200);
    assert_eq!(check(&c, 1, "/sync"), 503, "a quorum standby is not a priority-sync standby");
    // node2 sees the key at its own next cycle (the flake this line once was).
    assert_eq!(check_settled(&c, 2, "/quorum"), 200);
    assert_eq!(check(&c, 2, "/async"), 503);
    assert_eq!(check(&c, 0, "/read-only-quorum"), 200);
    let list = support::ctl::list_rows(c.config_path(0)).expect("rampart list");
    let roles: Vec<&str> = list.iter().filter_map(|r| r["Role"].as_str()).collect();
    assert_eq!(roles, ["Leader", "Quorum Standby", "Quorum Standby"], "{list:?}");

    // node2 stops (its agent stops PostgreSQL): the key drops it first, then the leader waits for
    // one acknowledgement, from node1. Commits keep working.
    assert!(c.stop_agent(2, Duration::from_secs(60)), "node2's agent stopped");
    wait_for_sync(&c, 0, r#"ANY 1 ("node1")"#, "node1", 0, Duration::from_secs(30)).await;
    assert_eq!(insert_within(&c, 0, 2, Duration::from_secs(10)).await, Some(Ok(1)));

    // node2 comes back: named in the setting first, in the key once PostgreSQL confirms it.
    c.start_agent(2);
    wait_for_sync(&c, 0, r#"ANY 2 ("node1","node2")"#, "node1,node2", 0, Duration::from_secs(60)).await;
    assert_eq!(insert_within(&c, 0, 3, Duration::from_secs(10)).await, Some(Ok(1)));
    assert_eq!(check_settled(&c, 2, "/quorum"), 200);

    // Synchronous mode off: the key goes, and the operator's own value is back.
    patch_config(&c, 0, r#"{"synchronous_mode": false}"#);
    let off = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        standby_names(&c, 0).await.as_deref() == Some("*") && sync_key(&c).is_none()
    })
    .await;
    assert!(off, "names {:?}, sync key {:?}", standby_names(&c, 0).await, sync_key(&c));
    // node1 reports itself asynchronous once its own agent has seen the key go (its next cycle).
    assert_eq!(check_settled(&c, 1, "/async"), 200, "node1 answers /async");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_by_its_synchronous_standby_only() {
    // node1 is preferred as synchronous standby; node2 would win an asynchronous race on
    // priority, but it is not synchronous, so it must not take over.
    let mut c = three_nodes(|i, cfg| match i {
        1 => cfg.tag("sync_priority", "5"),
        2 => cfg.tag("failover_priority", "10"),
        _ => cfg,
    });
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");
    support::client::sql(c.pg_port(0), "CREATE TABLE story (id int PRIMARY KEY)").await;
    patch_config(&c, 0, r#"{"synchronous_mode": true}"#);
    wait_for_sync(&c, 0, r#"FIRST 1 ("node1")"#, "node1", 0, Duration::from_secs(30)).await;
    assert_eq!(check_settled(&c, 1, "/sync"), 200);
    assert_eq!(check_settled(&c, 2, "/async"), 200);
    assert_eq!(check(&c, 2, "/sync"), 503);
    assert_eq!(insert_within(&c, 0, 1, Duration::from_secs(10)).await, Some(Ok(1)));

    c.kill_agent(0);
    c.kill_postgres(0).expect("postmaster pid");
    let mut leaders = Vec::new();
    let took_over = support::wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        let l = c.leader_name();
        if let Some(n) = &l {
            if !leaders.contains(n) {
                leaders.push(n.clone());
            }
        }
        l.as_deref() == Some("node1")
    });
    assert!(took_over, "node1 took over (leaders seen: {leaders:?})");
    assert!(!leaders.iter().any(|l| l == "node2"), "node2 never held the lock: {leaders:?}");
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(30)).await, Some(1));

    // The acknowledged commit is there; the new leader claims the key and makes node2 its
    // synchronous standby.
    let ids = support::client::story_ids(c.pg_port(1)).await;
    assert_eq!(ids, vec![1]);
    wait_for_sync(&c, 1, r#"FIRST 1 ("node2")"#, "node2", 0, Duration::from_secs(60)).await;
    assert_eq!(insert_within(&c, 1, 2, Duration::from_secs(10)).await, Some(Ok(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_an_asynchronous_standby_needs_force_and_says_what_it_risks() {
    let c = three_nodes(|i, cfg| if i == 1 { cfg.tag("sync_priority", "5") } else { cfg });
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");
    support::client::sql(c.pg_port(0), "CREATE TABLE story (id int PRIMARY KEY)").await;
    patch_config(&c, 0, r#"{"synchronous_mode": true}"#);
    wait_for_sync(&c, 0, r#"FIRST 1 ("node1")"#, "node1", 0, Duration::from_secs(30)).await;
    assert_eq!(insert_within(&c, 0, 1, Duration::from_secs(10)).await, Some(Ok(1)));

    // node2 is asynchronous: the agents refuse it unless told it may lose commits.
    let r = support::client::http_request(c.api_port(0), "POST", "/failover", Some(r#"{"candidate": "node2"}"#))
        .expect("POST /failover");
    assert_eq!(r.status, 412, "{}", r.body);
    assert!(r.body.contains("may lack acknowledged commits") && r.body.contains("\"force\": true"), "{}", r.body);
    assert_eq!(c.leader_name().as_deref(), Some("node0"));

    // `rampart failover --force` asks nothing but warns, and node2 leads.
    let o = support::ctl::ctl(c.config_path(0), &["failover", "--candidate", "node2", "--force"]);
    let (out, err) = (support::ctl::stdout(&o), support::ctl::stderr(&o));
    assert!(o.status.success(), "failover --force failed: {out}{err}");
    assert!(
        err.contains("Warning: node2 is not a synchronous standby: it may lack commits the leader acknowledged"),
        "{err}"
    );
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || c.leader_name().as_deref()
            == Some("node2")),
        "node2 leads (leader: {:?})",
        c.leader_name()
    );
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(30)).await, Some(2));
    // It had streamed the row (nothing was lost this time), and it picks a synchronous standby.
    assert_eq!(support::client::story_ids(c.pg_port(2)).await, vec![1]);
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || sync_state(&c)
            .is_some_and(|(leader, voters, _)| leader == "node2" && !voters.is_empty())),
        "the sync key names node2 and a standby: {:?}",
        sync_state(&c)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_synchronous_standby_is_replaced_and_a_nosync_member_never_votes() {
    // maximum_lag_on_syncnode 1 MB; node1 is preferred as synchronous standby.
    let c = three_nodes(|i, cfg| if i == 1 { cfg.tag("sync_priority", "5") } else { cfg });
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");
    support::client::sql(c.pg_port(0), "CREATE TABLE story (id int PRIMARY KEY)").await;
    support::client::sql(c.pg_port(0), "CREATE TABLE filler (t text)").await;
    patch_config(&c, 0, r#"{"synchronous_mode": true, "maximum_lag_on_syncnode": 1048576}"#);
    wait_for_sync(&c, 0, r#"FIRST 1 ("node1")"#, "node1", 0, Duration::from_secs(30)).await;

    // node1's WAL receiver freezes: it stops confirming anything. A large transaction then
    // waits for it, while node2 receives the WAL and gets more than 1 MB ahead of node1.
    let db1 = support::connect_superuser(c.pg_port(1)).await.expect("connect node1");
    let receiver: i32 = db1.query_one("SELECT pid FROM pg_stat_wal_receiver", &[]).await.unwrap().get(0);
    support::process::signal(receiver as u32, nix::sys::signal::Signal::SIGSTOP);
    let db0 = support::connect_superuser(c.pg_port(0)).await.expect("connect node0");
    let big = tokio::time::timeout(
        Duration::from_secs(60),
        db0.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 8000)", &[]),
    )
    .await;
    // The leader replaced node1 by node2, and the commit went through without node1. Checked
    // while node1 is still frozen: once it runs again it catches up and, being preferred, may be
    // synchronous again before a later look.
    let replaced = matches!(big, Ok(Ok(8000)))
        && sync_becomes(&c, 0, r#"FIRST 1 ("node2")"#, "node2", 0, Duration::from_secs(10)).await;
    let (names, key) = (standby_names(&c, 0).await, sync_state(&c));
    support::process::signal(receiver as u32, nix::sys::signal::Signal::SIGCONT);
    assert!(matches!(big, Ok(Ok(8000))), "the large commit completed: {big:?}");
    assert!(replaced, "node2 replaced the frozen node1: synchronous_standby_names {names:?}, sync key {key:?}");

    // node1 catches up and, being preferred, becomes synchronous again; then it is tagged
    // `nosync` (a reload), and node2 takes its place for good.
    wait_for_sync(&c, 0, r#"FIRST 1 ("node1")"#, "node1", 0, Duration::from_secs(60)).await;
    let cfg = std::fs::read_to_string(c.config_path(1)).unwrap();
    assert!(cfg.contains("\n  nosync: false\n"), "{cfg}");
    std::fs::write(c.config_path(1), cfg.replace("\n  nosync: false\n", "\n  nosync: true\n")).unwrap();
    assert_eq!(support::client::http_request(c.api_port(1), "POST", "/reload", None).expect("reload").status, 202);
    wait_for_sync(&c, 0, r#"FIRST 1 ("node2")"#, "node2", 0, Duration::from_secs(30)).await;
    assert_eq!(check_settled(&c, 1, "/async"), 200);
    assert_eq!(insert_within(&c, 0, 1, Duration::from_secs(10)).await, Some(Ok(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_makes_commits_wait_rather_than_go_unreplicated() {
    let mut c = three_nodes(|_, cfg| cfg);
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");
    support::client::sql(c.pg_port(0), "CREATE TABLE story (id int PRIMARY KEY)").await;
    patch_config(&c, 0, r#"{"synchronous_mode": "on", "synchronous_mode_strict": true}"#);
    wait_for_sync(&c, 0, r#"FIRST 1 ("node1")"#, "node1", 0, Duration::from_secs(30)).await;

    // Both replicas go away. The leader never goes asynchronous: it keeps waiting for a
    // synchronous standby (the last one it had, or one that does not exist yet).
    assert!(c.stop_agent(1, Duration::from_secs(60)), "node1's agent stopped");
    assert!(c.stop_agent(2, Duration::from_secs(60)), "node2's agent stopped");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let names = standby_names(&c, 0).await.unwrap_or_default();
    assert!(!names.is_empty(), "strict mode never clears synchronous_standby_names");
    let db = support::connect_superuser(c.pg_port(0)).await.expect("connect");
    let waiting =
        tokio::spawn(async move { db.execute("INSERT INTO story VALUES (1)", &[]).await.map_err(|e| e.to_string()) });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!waiting.is_finished(), "the commit waits for a synchronous standby (names: {names})");

    // The replicas come back: the waiting commit completes, and new ones go through.
    c.start_agent(1);
    c.start_agent(2);
    let done = tokio::time::timeout(Duration::from_secs(90), waiting).await;
    assert!(
        matches!(done, Ok(Ok(Ok(1)))),
        "the waiting commit completed once a replica was back: {done:?} (names: {:?})",
        standby_names(&c, 0).await
    );
    assert_eq!(insert_within(&c, 0, 2, Duration::from_secs(30)).await, Some(Ok(1)));
    assert_eq!(support::client::story_ids(c.pg_port(0)).await, vec![1, 2]);
}
