//! Stories of replication slots surviving a failover, as Patroni keeps them: every replica holds
//! the slots of the other members and the permanent slots of the dynamic configuration, moved
//! along with the positions the leader publishes in `status`, so that after a crash of the
//! leader (1) the surviving replica streams from the new primary through a slot that was already
//! there, and (2) a logical consumer finds its slot on the new primary and loses no change; and
//! (3) a member that stays away keeps its slot on every member for `member_slots_ttl` after its
//! member key expired, then loses it, and gets a new one when it comes back; (4) a replica that
//! cascades from another replica gets its copy of the logical slot from the leader too, follows
//! the consumer's position, and goes on streaming from its own upstream.

mod support;

use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, wait_healthy};
use tokio_postgres::Client;

const TTL: Duration = Duration::from_secs(10);

/// `(slot_name, active, position)` of every slot on the server at `port`; the position is the
/// confirmed flush LSN of a logical slot, the restart LSN of a physical one.
async fn slots(port: u16) -> Vec<(String, bool, Option<String>)> {
    let Ok(db) = support::connect_superuser(port).await else { return vec![] };
    let sql = "SELECT slot_name::text, active, \
               (CASE WHEN slot_type = 'logical' THEN confirmed_flush_lsn ELSE restart_lsn END)::text \
               FROM pg_replication_slots ORDER BY 1";
    match db.query(sql, &[]).await {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect(),
        Err(_) => vec![],
    }
}

async fn slot(port: u16, name: &str) -> Option<(bool, Option<String>)> {
    slots(port).await.into_iter().find(|(n, ..)| n == name).map(|(_, a, p)| (a, p))
}

/// Kills the leader's agent and postmaster together, and waits for another member to lead.
fn crash_leader(c: &mut Cluster, old: usize) -> usize {
    c.kill_agent(old);
    c.kill_postgres(old).expect("postmaster pid");
    assert!(
        support::wait_until(TTL + Duration::from_secs(15), Duration::from_millis(100), || {
            c.leader_index().is_some_and(|l| l != old)
        }),
        "no new leader after the crash"
    );
    c.leader_index().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_rejoining_after_a_failover_finds_its_slot() {
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let (a, b) = match (0..3).filter(|&i| i != old).collect::<Vec<_>>()[..] {
        [a, b] => (a, b),
        _ => unreachable!(),
    };
    support::client::sql(c.pg_port(old), "CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1)").await;

    // Before anything fails, each replica already keeps a slot for the other replica and one
    // for the leader, with a position (it reserves WAL), as the leader keeps them.
    for (holder, other) in [(a, b), (b, a)] {
        let (hp, want) = (c.pg_port(holder), [c.name(other).to_string(), c.name(old).to_string()]);
        assert!(
            support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
                let have = slots(hp).await;
                want.iter().all(|w| have.iter().any(|(n, active, pos)| n == w && !active && pos.is_some()))
            })
            .await,
            "{} keeps slots for {want:?}: {:?}",
            c.name(holder),
            slots(hp).await
        );
    }
    // The leader publishes what replicas need in `status`: positions and the slots to keep. A
    // replica's slot has a position only once it has streamed through it, and `status` is written
    // once per cycle, so look until a cycle has published it.
    let status = || -> serde_json::Value {
        serde_json::from_str(&c.etcd().get(&format!("{}status", c.dcs_prefix())).expect("status key")).unwrap()
    };
    support::wait_until(Duration::from_secs(10), Duration::from_millis(250), || {
        let s = status();
        s["slots"][c.name(a)].is_u64() && s["slots"][c.name(old)].is_u64()
    });
    let status = status();
    assert!(status["slots"][c.name(a)].is_u64() && status["slots"][c.name(old)].is_u64(), "{status}");
    assert!(status["retain_slots"].as_array().is_some_and(|r| r.len() == 3), "{status}");

    let new = crash_leader(&mut c, old);
    let other = if new == a { b } else { a };
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || is_streaming_replica(
            &c,
            other,
            Some(2)
        )),
        "the other replica streams from the new leader"
    );
    // It streams through the slot the new leader already had before it was promoted.
    let np = c.pg_port(new);
    assert!(
        support::wait_until_async(Duration::from_secs(15), Duration::from_millis(200), || async {
            slot(np, c.name(other)).await.is_some_and(|(active, _)| active)
        })
        .await,
        "slot of {} active on the new leader: {:?}",
        c.name(other),
        slots(np).await
    );
    let log = std::fs::read_to_string(c.log_path(new)).unwrap();
    let after_promotion = log.rsplit("promoting self").next().unwrap_or("");
    assert!(
        !after_promotion.contains(&format!("created {} (physical)", c.name(other))),
        "the slot was not made after the promotion: it was there already"
    );
}

/// The changes `pg_logical_slot_get_changes` returns on `db` for slot `cdc`, as the ids of the
/// inserted `story` rows (test_decoding prints `id[integer]:<n>`).
/// Waits for the leader at `port` to create the permanent logical slot `cdc`.
async fn wait_for_cdc_on_leader(port: u16) {
    assert!(
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
            slot(port, "cdc").await.is_some()
        })
        .await,
        "the leader creates the permanent logical slot: {:?}",
        slots(port).await
    );
}

async fn consume(db: &Client) -> Vec<i32> {
    let rows = db.query("SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)", &[]).await.unwrap();
    rows.iter()
        .filter_map(|r| {
            let data: String = r.get(0);
            let id = data.split("id[integer]:").nth(1)?;
            id.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_consumer_finds_its_slot_on_the_new_primary_and_loses_nothing() {
    let options = ClusterOptions::default().tweak(|_, mut n| {
        n.dcs_parameters.push(("wal_level".into(), "logical".into()));
        n.dcs_yaml = "    slots:\n      cdc: {type: logical, database: postgres, plugin: test_decoding}\n".into();
        n
    });
    let mut c = Cluster::start(3, options);
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let op = c.pg_port(old);
    wait_for_cdc_on_leader(op).await;

    // A consumer reads the first rows; three more are written that nobody has consumed yet.
    let db = support::connect_superuser(op).await.unwrap();
    db.batch_execute("CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1), (2), (3)").await.unwrap();
    assert_eq!(consume(&db).await, vec![1, 2, 3]);
    db.batch_execute("INSERT INTO story VALUES (4); INSERT INTO story VALUES (5), (6)").await.unwrap();
    let confirmed = slot(op, "cdc").await.and_then(|(_, p)| p).expect("confirmed position");

    // Each replica copies the slot (restarting once) and moves it to what the consumer confirmed.
    for r in (0..3).filter(|&i| i != old) {
        let rp = c.pg_port(r);
        assert!(
            support::wait_until_async(Duration::from_secs(60), Duration::from_millis(250), || async {
                slot(rp, "cdc").await.and_then(|(_, p)| p).as_deref() == Some(confirmed.as_str())
            })
            .await,
            "{} holds cdc at the confirmed position {confirmed}: {:?}",
            c.name(r),
            slots(rp).await
        );
        assert!(
            support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || is_streaming_replica(
                &c, r, None
            )),
            "{} streams again after its restart",
            c.name(r)
        );
    }
    let log = std::fs::read_to_string(c.log_path((old + 1) % 3)).unwrap();
    assert!(log.contains("restarting to copy logical slots [cdc]"), "the restart is logged with its reason");
    // Let the replicas replay rows 4 to 6 before the crash.
    let lsn: String = db.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await.unwrap().get(0);
    for r in (0..3).filter(|&i| i != old) {
        let rdb = support::connect_superuser(c.pg_port(r)).await.unwrap();
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        assert!(
            support::wait_until_async(Duration::from_secs(20), Duration::from_millis(100), || async {
                support::client::query_one_bool(&rdb, &sql).await.unwrap_or(false)
            })
            .await
        );
    }
    drop(db);

    let new = crash_leader(&mut c, old);
    let np = c.pg_port(new);
    assert!(
        support::wait_until_async(Duration::from_secs(20), Duration::from_millis(200), || async {
            support::is_in_recovery(np).await == Some(false)
        })
        .await
    );
    // The consumer reconnects to the new primary: exactly the rows it had not consumed. (A
    // consumer tolerates seeing changes again after a failover; here the copy had been moved to
    // the confirmed position before the crash, so nothing repeats and nothing is missing.)
    let db = support::connect_superuser(np).await.unwrap();
    assert_eq!(consume(&db).await, vec![4, 5, 6], "slots on the new primary: {:?}", slots(np).await);
    db.batch_execute("INSERT INTO story VALUES (7)").await.unwrap();
    assert_eq!(consume(&db).await, vec![7], "the slot keeps decoding on the new timeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stays_away_keeps_its_slot_for_member_slots_ttl() {
    // 20 s: long enough to see the slot outlive the member key, short enough to wait out.
    let options = ClusterOptions::default().tweak(|_, mut n| {
        n.dcs_yaml = "    member_slots_ttl: 20s\n".into();
        n
    });
    let mut c = Cluster::start(3, options);
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let away = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let name = c.name(away).to_string();
    let (lp, op) = (c.pg_port(leader), c.pg_port(other));
    let has = |port: u16| {
        let name = name.clone();
        async move { slot(port, &name).await.is_some() }
    };
    assert!(
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
            has(lp).await && has(op).await
        })
        .await,
        "the leader and the other replica hold {name}'s slot"
    );

    // The member stops; once its member key is gone the slot is still there, on the leader and
    // on the other replica, and the leader says it retains it.
    assert!(c.stop_agent(away, Duration::from_secs(60)), "{name}'s agent stopped");
    let member_key = format!("{}members/{name}", c.dcs_prefix());
    assert!(
        support::wait_until(TTL + Duration::from_secs(10), Duration::from_millis(200), || c
            .etcd()
            .get(&member_key)
            .is_none()),
        "{name}'s member key expired"
    );
    let gone = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        has(lp).await && has(op).await,
        "slot kept after the member left: leader {:?}, replica {:?}",
        slots(lp).await,
        slots(op).await
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.etcd().get(&format!("{}status", c.dcs_prefix())).expect("status key")).unwrap();
    assert!(status["retain_slots"].as_array().is_some_and(|r| r.iter().any(|s| s == name.as_str())), "{status}");

    // After member_slots_ttl the slot goes, everywhere.
    assert!(
        support::wait_until_async(Duration::from_secs(45), Duration::from_millis(250), || async {
            !has(lp).await && !has(op).await
        })
        .await,
        "{name}'s slot dropped after member_slots_ttl: leader {:?}, replica {:?}",
        slots(lp).await,
        slots(op).await
    );
    println!("slot of {name} dropped {:?} after its member key expired (member_slots_ttl 20 s)", gone.elapsed());

    // Back again, it gets a slot and streams through it.
    c.start_agent(away);
    assert!(
        support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || is_streaming_replica(
            &c, away, None
        )),
        "{name} streams again"
    );
    assert!(
        support::wait_until_async(Duration::from_secs(20), Duration::from_millis(250), || async {
            slot(lp, &name).await.is_some_and(|(active, _)| active)
        })
        .await,
        "{name} streams through its slot again: {:?}",
        slots(lp).await
    );
}

/// The standbys streaming from the server at `port` (their `application_name`s).
async fn walsenders(port: u16) -> Vec<String> {
    let Ok(db) = support::connect_superuser(port).await else { return vec![] };
    match db.query("SELECT application_name FROM pg_stat_replication ORDER BY 1", &[]).await {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(_) => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascading_replica_copies_the_logical_slot_from_the_leader() {
    // node0 starts first and leads; node2 streams from node1, not from the leader.
    let options = ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() }.tweak(|i, mut n| {
        n.dcs_parameters.push(("wal_level".into(), "logical".into()));
        n.dcs_yaml = "    slots:\n      cdc: {type: logical, database: postgres, plugin: test_decoding}\n".into();
        if i == 2 {
            n = n.tag("replicatefrom", "node1");
        }
        n
    });
    let c = Cluster::start(3, options);
    assert_eq!(wait_healthy(&c, Duration::from_secs(90)), Some(0), "node0 leads");
    let (lp, mid, tail) = (c.pg_port(0), c.pg_port(1), c.pg_port(2));
    wait_for_cdc_on_leader(lp).await;

    // A consumer reads on the leader; node2, two hops away, holds the slot where it confirmed.
    let db = support::connect_superuser(lp).await.unwrap();
    db.batch_execute("CREATE TABLE story (id int PRIMARY KEY); INSERT INTO story VALUES (1), (2)").await.unwrap();
    assert_eq!(consume(&db).await, vec![1, 2]);
    let confirmed = slot(lp, "cdc").await.and_then(|(_, p)| p).expect("confirmed position");
    // A copy is the slot's state as the leader last saved it (at a checkpoint). A copy taken
    // before this one may need WAL node2 never had (it was cloned later): such a copy cannot be
    // advanced and is copied again, at most once a minute, from the state saved here.
    db.batch_execute("CHECKPOINT").await.unwrap();
    let started = std::time::Instant::now();
    assert!(
        support::wait_until_async(Duration::from_secs(120), Duration::from_millis(250), || async {
            slot(tail, "cdc").await.and_then(|(_, p)| p).as_deref() == Some(confirmed.as_str())
        })
        .await,
        "node2 holds cdc at the confirmed position {confirmed}: {:?}",
        slots(tail).await
    );
    println!("node2's copy of cdc reached the confirmed position {:?} after the checkpoint", started.elapsed());
    let log = std::fs::read_to_string(c.log_path(2)).unwrap();
    assert!(log.contains("restarting to copy logical slots [cdc]"), "node2 copied the slot itself");
    // After its restart node2 streams from node1 again, not from the leader.
    assert!(
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
            walsenders(mid).await == ["node2"] && walsenders(lp).await == ["node1"]
        })
        .await,
        "leader sends to {:?}, node1 sends to {:?}",
        walsenders(lp).await,
        walsenders(mid).await
    );
}
