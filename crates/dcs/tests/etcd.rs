//! `EtcdDcs` against a real etcd (/usr/bin/etcd) started per test: the leader-lock races, lease
//! expiry, Patroni's value formats, the watcher's recovery, and bounded failures. etcd comes from
//! `rampart-kit`, the launcher the e2e harness uses too.

use std::sync::Arc;
use std::time::Duration;

use rampart_core::keys::ClusterPrefix;
use rampart_core::model::{Failover, HistoryEntry, Status, SyncState};
use rampart_core::Lsn;
use rampart_dcs::{Dcs, DcsError, EtcdDcs, EtcdOptions};
use rampart_kit::etcd::Etcd;
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

mod common;
use common::member;

const OP: Duration = Duration::from_millis(1500);

fn options(endpoints: Vec<String>, op_timeout: Duration) -> EtcdOptions {
    EtcdOptions { endpoints, op_timeout, ..Default::default() }
}

fn prefix() -> ClusterPrefix {
    ClusterPrefix::new("/service", "test")
}

/// Logs of the crate under test, shown with `RUST_LOG=rampart_dcs=debug cargo test -- --nocapture`.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn node(etcd: &Etcd, name: &str, ttl: u64) -> EtcdDcs {
    EtcdDcs::connect(options(vec![etcd.endpoint()], OP), prefix(), name.to_string(), ttl).await.expect("connect")
}

fn dl() -> Instant {
    Instant::now() + OP
}

/// The raw bytes of a key, read with a plain etcd client.
async fn raw_get(etcd: &Etcd, key: &str) -> Option<(String, i64)> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("raw client");
    let resp = client.get(key, None).await.expect("raw get");
    resp.kvs().first().map(|kv| (String::from_utf8(kv.value().to_vec()).expect("utf8"), kv.lease()))
}

async fn expect_wake(notify: &Notify, within: Duration, what: &str) {
    timeout(within, notify.notified())
        .await
        .unwrap_or_else(|_| panic!("watcher did not wake within {within:?} for {what}"));
}

async fn expect_no_wake(notify: &Notify, during: Duration, what: &str) {
    assert!(timeout(during, notify.notified()).await.is_err(), "watcher woke for {what}");
}

#[tokio::test]
async fn leader_race_renew_release_and_shared_lease() {
    init_logs();
    let etcd = Etcd::start();
    let a = node(&etcd, "a", 10).await;
    let b = node(&etcd, "b", 10).await;
    a.touch_member(&member("a", 100), dl()).await.unwrap();
    b.touch_member(&member("b", 90), dl()).await.unwrap();

    let (ra, rb) = tokio::join!(a.acquire_leader(dl()), b.acquire_leader(dl()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra ^ rb, "exactly one must win: a={ra} b={rb}");
    let (winner, loser) = if ra { (&a, &b) } else { (&b, &a) };

    assert!(winner.renew_leader(dl()).await.unwrap().is_some());
    assert!(loser.renew_leader(dl()).await.unwrap().is_none());
    assert!(!loser.acquire_leader(dl()).await.unwrap());
    assert!(!loser.release_leader(dl()).await.unwrap());
    // Acquiring again what we already hold on our current lease is not a failure.
    assert!(winner.acquire_leader(dl()).await.unwrap());
    // A steady renewal only extends the lease: no write, so no new revision of the key.
    let before = winner.read_cluster(dl()).await.unwrap().leader.unwrap().mod_revision;
    assert!(winner.renew_leader(dl()).await.unwrap().is_some());
    assert_eq!(winner.read_cluster(dl()).await.unwrap().leader.unwrap().mod_revision, before);

    // One lease per node, shared by its member key and the leader key.
    let cluster = winner.read_cluster(dl()).await.unwrap();
    assert!(cluster.problems.is_empty(), "{:?}", cluster.problems);
    let lock = cluster.leader.clone().expect("leader key");
    assert_eq!(lock.name, winner.member_name());
    assert_ne!(lock.lease, 0);
    assert_eq!(Some(lock.lease), winner.lease_id());
    assert_eq!(cluster.member(winner.member_name()).unwrap().lease, lock.lease);
    assert_ne!(cluster.member(loser.member_name()).unwrap().lease, lock.lease);
    assert!(cluster.revision > 0);

    // Patroni's formats: the leader key is the bare name, the member key compact JSON.
    let (leader_raw, leader_lease) = raw_get(&etcd, "/service/test/leader").await.unwrap();
    assert_eq!(leader_raw, winner.member_name());
    assert_eq!(leader_lease, lock.lease);
    let (member_raw, _) = raw_get(&etcd, &format!("/service/test/members/{}", winner.member_name())).await.unwrap();
    assert!(member_raw.starts_with("{\"conn_url\":\"postgres://127.0.0.1:5432/"), "{member_raw}");
    assert!(!member_raw.contains(": ") && !member_raw.contains("\n"), "not compact: {member_raw}");
    let parsed: serde_json::Value = serde_json::from_str(&member_raw).unwrap();
    assert_eq!(parsed["role"], "replica");
    assert_eq!(parsed["timeline"], 1);

    // A TTL change moves both keys to a new lease at their next write.
    let old_lease = lock.lease;
    winner.set_ttl(12);
    assert!(winner.renew_leader(dl()).await.unwrap().is_some());
    winner.touch_member(&member(winner.member_name(), 101), dl()).await.unwrap();
    let cluster = winner.read_cluster(dl()).await.unwrap();
    let new_lease = cluster.leader.as_ref().unwrap().lease;
    assert_ne!(new_lease, old_lease);
    assert_eq!(Some(new_lease), winner.lease_id());
    assert_eq!(cluster.member(winner.member_name()).unwrap().lease, new_lease);

    // Release hands the lock over; member keys stay.
    assert!(winner.release_leader(dl()).await.unwrap());
    assert!(loser.acquire_leader(dl()).await.unwrap());
    assert!(winner.renew_leader(dl()).await.unwrap().is_none());
    let cluster = loser.read_cluster(dl()).await.unwrap();
    assert!(cluster.is_leader(loser.member_name()));
    assert_eq!(cluster.members.len(), 2);

    // A leader key that vanished (deleted by hand) is recreated by its holder's renewal.
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    raw.delete("/service/test/leader", None).await.unwrap();
    assert!(loser.renew_leader(dl()).await.unwrap().is_some());
    assert!(loser.read_cluster(dl()).await.unwrap().is_leader(loser.member_name()));
}

#[tokio::test]
async fn leader_key_expires_when_the_holder_stops_refreshing() {
    init_logs();
    let etcd = Etcd::start();
    let a = node(&etcd, "a", 3).await;
    let b = node(&etcd, "b", 3).await;
    a.touch_member(&member("a", 1), dl()).await.unwrap();
    assert!(a.acquire_leader(dl()).await.unwrap());
    let acquired = Instant::now();
    assert!(!b.acquire_leader(dl()).await.unwrap());

    // `a` goes silent; `b` watches the key disappear together with a's member key.
    loop {
        let cluster = b.read_cluster(dl()).await.unwrap();
        if cluster.leader.is_none() {
            assert!(cluster.member("a").is_none(), "member key shares the lease");
            break;
        }
        assert!(acquired.elapsed() < Duration::from_secs(8), "leader key still there after 8 s");
        sleep(Duration::from_millis(100)).await;
    }
    let gone_after = acquired.elapsed();
    assert!(gone_after >= Duration::from_secs(2), "expired too early: {gone_after:?}");

    assert!(b.acquire_leader(dl()).await.unwrap());
    // The old holder's lease is gone: its refresh grants a new one, and its renewal fails.
    assert!(a.renew_leader(dl()).await.unwrap().is_none());
    let lease = a.lease_id().unwrap();
    a.touch_member(&member("a", 2), dl()).await.unwrap();
    assert_eq!(b.read_cluster(dl()).await.unwrap().member("a").unwrap().lease, lease);
}

#[tokio::test]
async fn initialize_race_config_cas_and_other_keys() {
    init_logs();
    let etcd = Etcd::start();
    let a = node(&etcd, "a", 10).await;
    let b = node(&etcd, "b", 10).await;

    let (ra, rb) = tokio::join!(a.try_initialize("", dl()), b.try_initialize("", dl()));
    assert!(ra.unwrap() ^ rb.unwrap(), "exactly one bootstrap winner");
    assert_eq!(a.read_cluster(dl()).await.unwrap().initialize.as_deref(), Some(""));
    a.cancel_initialize(dl()).await.unwrap();
    assert_eq!(a.read_cluster(dl()).await.unwrap().initialize, None);
    assert!(b.try_initialize("", dl()).await.unwrap());
    b.set_initialize("7301234567890123456", dl()).await.unwrap();
    assert_eq!(raw_get(&etcd, "/service/test/initialize").await.unwrap(), ("7301234567890123456".into(), 0));
    assert!(!a.try_initialize("", dl()).await.unwrap());

    let config = r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#;
    assert!(a.set_config_if_absent(config, dl()).await.unwrap());
    assert!(!b.set_config_if_absent(r#"{"ttl":99}"#, dl()).await.unwrap());
    let first = a.read_cluster(dl()).await.unwrap();
    assert!(first.config.is_some(), "{:?}", first.problems);
    let stale = first.config_revision;
    assert!(a.set_config(r#"{"ttl":20,"loop_wait":10,"retry_timeout":10}"#, Some(stale), dl()).await.unwrap());
    assert!(!b.set_config(r#"{"ttl":40}"#, Some(stale), dl()).await.unwrap(), "stale revision must lose");
    assert_eq!(
        raw_get(&etcd, "/service/test/config").await.unwrap().0,
        r#"{"ttl":20,"loop_wait":10,"retry_timeout":10}"#
    );
    assert!(b.set_config(config, None, dl()).await.unwrap());

    let status = Status { optime: 50331968, slots: [("b".to_string(), 50331000)].into(), retain_slots: vec![] };
    a.write_status(&status, dl()).await.unwrap();
    assert_eq!(
        raw_get(&etcd, "/service/test/status").await.unwrap().0,
        r#"{"optime":50331968,"slots":{"b":50331000}}"#
    );
    let history = vec![HistoryEntry {
        timeline: 1,
        lsn: Lsn(50331808),
        reason: "no recovery target specified".into(),
        timestamp: Some("2024-01-01T00:00:00+00:00".into()),
        new_leader: Some("a".into()),
    }];
    a.write_history(&history, dl()).await.unwrap();
    assert_eq!(
        raw_get(&etcd, "/service/test/history").await.unwrap().0,
        r#"[[1,50331808,"no recovery target specified","2024-01-01T00:00:00+00:00","a"]]"#
    );
    let failover = Failover { leader: Some("a".into()), member: Some("b".into()), scheduled_at: None, force: false };
    a.set_failover(&failover, dl()).await.unwrap();

    let cluster = b.read_cluster(dl()).await.unwrap();
    assert!(cluster.problems.is_empty(), "{:?}", cluster.problems);
    assert_eq!(cluster.status, status);
    assert_eq!(cluster.history, history);
    assert_eq!(cluster.failover, Some(failover));
    assert_eq!(cluster.timeline(), 2);

    // The sync key: created only if absent, then replaced only at the revision last read.
    let sync = SyncState::new("a", &["b".into()], 0);
    assert!(a.write_sync(&sync, 0, dl()).await.unwrap());
    assert!(!b.write_sync(&SyncState::new("b", &[], 0), 0, dl()).await.unwrap(), "exists: create loses");
    assert_eq!(
        raw_get(&etcd, "/service/test/sync").await.unwrap().0,
        r#"{"leader":"a","sync_standby":"b","quorum":0}"#
    );
    let read = b.read_cluster(dl()).await.unwrap();
    assert_eq!(read.sync.as_ref(), Some(&sync));
    let rev = read.sync_revision;
    assert!(rev > 0);
    assert!(a.write_sync(&SyncState::new("a", &[], 0), rev, dl()).await.unwrap());
    assert!(!b.write_sync(&SyncState::new("b", &[], 0), rev, dl()).await.unwrap(), "stale revision must lose");
    assert!(!b.delete_sync(rev, dl()).await.unwrap(), "stale revision must lose");
    let rev = b.read_cluster(dl()).await.unwrap().sync_revision;
    assert!(b.delete_sync(rev, dl()).await.unwrap());
    let read = b.read_cluster(dl()).await.unwrap();
    assert_eq!((read.sync, read.sync_revision), (None, 0));

    b.clear_failover(dl()).await.unwrap();
    assert_eq!(raw_get(&etcd, "/service/test/failover").await.unwrap().0, "{}");
    assert_eq!(b.read_cluster(dl()).await.unwrap().failover, None);

    a.touch_member(&member("a", 1), dl()).await.unwrap();
    a.delete_member(dl()).await.unwrap();
    assert!(a.read_cluster(dl()).await.unwrap().member("a").is_none());

    // Another cluster's keys are out of reach of delete_cluster.
    let other =
        EtcdDcs::connect(options(vec![etcd.endpoint()], OP), ClusterPrefix::new("/service", "test2"), "x".into(), 10)
            .await
            .unwrap();
    other.set_initialize("1", dl()).await.unwrap();
    a.delete_cluster(dl()).await.unwrap();
    assert_eq!(a.read_cluster(dl()).await.unwrap().initialize, None);
    assert_eq!(other.read_cluster(dl()).await.unwrap().initialize.as_deref(), Some("1"));
}

#[tokio::test]
async fn watcher_wakes_on_leader_changes_only_for_relevant_events() {
    init_logs();
    let etcd = Etcd::start();
    let a = node(&etcd, "a", 10).await;
    let b = node(&etcd, "b", 10).await;
    let notify = Arc::new(Notify::new());
    let watcher = b.spawn_watcher(notify.clone());
    expect_wake(&notify, Duration::from_secs(3), "the initial start").await;

    a.touch_member(&member("a", 1), dl()).await.unwrap();
    expect_wake(&notify, Duration::from_secs(2), "a member joining").await;
    a.touch_member(&member("a", 2), dl()).await.unwrap();
    expect_no_wake(&notify, Duration::from_millis(500), "a member's routine update").await;

    let started = Instant::now();
    assert!(a.acquire_leader(dl()).await.unwrap());
    expect_wake(&notify, Duration::from_secs(2), "the leader key appearing").await;
    assert!(started.elapsed() < Duration::from_millis(1500), "wake took {:?}", started.elapsed());

    assert!(a.renew_leader(dl()).await.unwrap().is_some());
    expect_no_wake(&notify, Duration::from_millis(500), "a renewal that changes nothing").await;

    assert!(a.release_leader(dl()).await.unwrap());
    expect_wake(&notify, Duration::from_secs(2), "the leader key vanishing").await;
    watcher.abort();
}

#[tokio::test]
async fn watcher_survives_etcd_restart() {
    init_logs();
    let mut etcd = Etcd::start();
    let a = node(&etcd, "a", 10).await;
    let b = node(&etcd, "b", 10).await;
    let notify = Arc::new(Notify::new());
    let watcher = b.spawn_watcher(notify.clone());
    expect_wake(&notify, Duration::from_secs(3), "the initial start").await;
    a.touch_member(&member("a", 1), dl()).await.unwrap();
    expect_wake(&notify, Duration::from_secs(2), "a member joining").await;

    etcd.stop();
    sleep(Duration::from_millis(500)).await;
    etcd.start_again();
    // Written possibly before the watcher is back: it reads everything again when it is, and
    // wakes the loop.
    assert!(a.acquire_leader(Instant::now() + Duration::from_secs(5)).await.unwrap());
    expect_wake(&notify, Duration::from_secs(6), "the leader key after a restart").await;

    // And it keeps following later changes.
    assert!(a.release_leader(dl()).await.unwrap());
    expect_wake(&notify, Duration::from_secs(3), "the release after a restart").await;
    watcher.abort();
}

#[tokio::test]
async fn watcher_starts_afresh_after_compaction_or_a_rebuilt_store() {
    init_logs();
    let mut etcd = Etcd::start();
    let a = node(&etcd, "a", 10).await;
    let notify = Arc::new(Notify::new());
    let watcher = a.spawn_watcher(notify.clone());
    expect_wake(&notify, Duration::from_secs(3), "the initial start").await;
    a.touch_member(&member("a", 1), dl()).await.unwrap();
    expect_wake(&notify, Duration::from_secs(2), "a member joining").await;

    // While the watcher cannot reach etcd (it is served on another port for a moment), history
    // moves on and is compacted, so the watcher's resume revision no longer exists.
    let port = etcd.client_port();
    etcd.stop();
    etcd.set_client_port(rampart_kit::free_port());
    etcd.start_again();
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    for i in 0..3 {
        raw.put("/service/test/status", format!("{{\"optime\":{i}}}"), None).await.unwrap();
    }
    let revision = raw.get("/service/test/status", None).await.unwrap().header().unwrap().revision();
    raw.compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    etcd.stop();
    etcd.set_client_port(port);
    etcd.start_again();

    // Status writes never wake by themselves: this wake is the fresh start after the compaction.
    expect_wake(&notify, Duration::from_secs(5), "the fresh start after a compaction").await;
    assert!(a.acquire_leader(dl()).await.unwrap());
    expect_wake(&notify, Duration::from_secs(3), "the leader key after the fresh start").await;

    // A store rebuilt from scratch is behind the watcher's revision: it must start afresh too,
    // not wait for revisions that the new store will only reach much later.
    etcd.stop();
    etcd.wipe_data();
    etcd.start_again();
    expect_wake(&notify, Duration::from_secs(5), "the fresh start on a rebuilt store").await;
    a.touch_member(&member("a", 2), Instant::now() + Duration::from_secs(3)).await.unwrap();
    expect_wake(&notify, Duration::from_secs(3), "a member joining the rebuilt store").await;
    watcher.abort();
}

#[tokio::test]
async fn frozen_etcd_gives_timeouts_and_the_watch_recovers() {
    init_logs();
    let etcd = Etcd::start();
    let op = Duration::from_millis(800);
    let connect = |name: &str| EtcdDcs::connect(options(vec![etcd.endpoint()], op), prefix(), name.into(), 10);
    let (a, b) = (connect("a").await.unwrap(), connect("b").await.unwrap());
    let notify = Arc::new(Notify::new());
    let watcher = b.spawn_watcher(notify.clone());
    expect_wake(&notify, Duration::from_secs(3), "the initial start").await;

    // A silent server: TCP is up but nothing answers. Calls must still return in time.
    etcd.freeze();
    let started = Instant::now();
    let err = a.read_cluster(a.op_deadline()).await.expect_err("frozen etcd cannot answer");
    assert!(started.elapsed() < op + Duration::from_millis(500), "took {:?}", started.elapsed());
    assert!(matches!(err, DcsError::Timeout { .. }), "{err}");
    eprintln!("frozen: {err}");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    // Long enough for the watcher to notice that its stream went quiet.
    sleep(Duration::from_secs(3)).await;
    etcd.thaw();

    assert!(a.acquire_leader(Instant::now() + Duration::from_secs(3)).await.unwrap());
    expect_wake(&notify, Duration::from_secs(4), "the leader key after a freeze").await;
    watcher.abort();
}

#[tokio::test]
async fn unreachable_etcd_fails_fast_with_a_clear_error() {
    init_logs();
    // Never started: connecting still works (lazily), every operation reports the endpoint.
    let nobody = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let dcs = EtcdDcs::connect(options(vec![nobody.clone()], OP), prefix(), "a".into(), 10).await.unwrap();
    let started = Instant::now();
    let err = dcs.acquire_leader(dcs.op_deadline()).await.expect_err("no etcd there");
    assert!(started.elapsed() < OP + Duration::from_millis(500), "took {:?}", started.elapsed());
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&nobody), "{err}");

    // Killed while in use.
    let mut etcd = Etcd::start();
    let a = node(&etcd, "a", 10).await;
    a.read_cluster(dl()).await.unwrap();
    etcd.stop();
    let started = Instant::now();
    let err = a.read_cluster(a.op_deadline()).await.expect_err("etcd is gone");
    assert!(started.elapsed() < OP + Duration::from_millis(500), "took {:?}", started.elapsed());
    assert!(matches!(err, DcsError::Unreachable { .. } | DcsError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&etcd.endpoint()), "{err}");
    eprintln!("error shown to the operator: {err}");

    // The same handle works again once etcd is back.
    etcd.start_again();
    a.read_cluster(Instant::now() + Duration::from_secs(3)).await.unwrap();
}

#[tokio::test]
async fn dead_and_frozen_endpoints_are_skipped_within_the_deadline() {
    init_logs();
    let etcd = Etcd::start();
    // Refuses connections.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    // Accepts TCP (the kernel completes the handshake) but never answers, like a frozen etcd.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let frozen = format!("http://127.0.0.1:{}", hole.local_addr().unwrap().port());
    let live = etcd.endpoint();
    for endpoints in [
        vec![frozen.clone(), dead.clone(), live.clone()],
        vec![dead.clone(), frozen.clone(), live.clone()],
        vec![live.clone(), frozen.clone(), dead.clone()],
    ] {
        let dcs = EtcdDcs::connect(options(endpoints.clone(), OP), prefix(), "a".into(), 10).await.unwrap();
        for i in 0..8 {
            dcs.touch_member(&member("a", i), dcs.op_deadline())
                .await
                .unwrap_or_else(|e| panic!("touch {i} with {endpoints:?}: {e}"));
            dcs.read_cluster(dcs.op_deadline()).await.unwrap_or_else(|e| panic!("read {i} with {endpoints:?}: {e}"));
        }
        // The watcher also finds the live endpoint.
        let notify = Arc::new(Notify::new());
        let watcher = dcs.spawn_watcher(notify.clone());
        expect_wake(&notify, Duration::from_secs(3), "the initial start").await;
        watcher.abort();
    }
}

#[tokio::test]
async fn password_authentication() {
    init_logs();
    let mut etcd = Etcd::start();
    let mut root = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    root.user_add("root", "s3cret-pw", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.auth_enable().await.unwrap();

    let with = |password: Option<&str>| {
        let mut o = options(vec![etcd.endpoint()], OP);
        o.username = password.map(|_| "root".to_string());
        o.password = password.map(str::to_string);
        EtcdDcs::connect(o, prefix(), "a".into(), 10)
    };
    let good = with(Some("s3cret-pw")).await.unwrap();
    assert!(good.acquire_leader(dl()).await.unwrap());
    assert!(good.read_cluster(dl()).await.unwrap().is_leader("a"));

    let bad = with(Some("wrong-pw")).await.unwrap();
    let err = bad.read_cluster(dl()).await.expect_err("wrong password");
    assert!(matches!(err, DcsError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
    eprintln!("wrong password: {err}");

    let anonymous = with(None).await.unwrap();
    let err = anonymous.touch_member(&member("a", 1), dl()).await.expect_err("no credentials");
    assert!(matches!(err, DcsError::Auth { .. }), "{err}");
    eprintln!("no credentials: {err}");

    // etcd forgets its tokens on restart; the client authenticates again by itself.
    etcd.stop();
    etcd.start_again();
    assert!(good.renew_leader(Instant::now() + Duration::from_secs(3)).await.unwrap().is_some());
}

#[tokio::test]
async fn mutual_tls() {
    let etcd = Etcd::start_tls();
    let tls = etcd.tls().unwrap();
    let mut o = options(vec![etcd.endpoint().replace("https://", "")], OP);
    o.ca_file = Some(tls.ca.clone());
    o.cert_file = Some(tls.client_cert.clone());
    o.key_file = Some(tls.client_key.clone());
    let dcs = EtcdDcs::connect(o.clone(), prefix(), "a".into(), 10).await.unwrap();
    // The server may still be electing itself: allow for that once.
    assert!(dcs.acquire_leader(Instant::now() + Duration::from_secs(5)).await.unwrap());
    assert!(dcs.read_cluster(dl()).await.unwrap().is_leader("a"));

    o.ca_file = Some("/nonexistent/ca.pem".into());
    let err = EtcdDcs::connect(o, prefix(), "a".into(), 10).await.expect_err("unreadable CA");
    assert!(matches!(err, DcsError::Config { .. }), "{err}");
}

#[tokio::test]
async fn proxies_register_on_their_own_lease_write_only_changes_and_vanish_with_it() {
    use rampart_core::ProxyReport;
    init_logs();
    let etcd = Etcd::start();
    let agent = node(&etcd, "a", 10).await;
    agent.touch_member(&member("a", 1), dl()).await.unwrap();
    let notify = Arc::new(Notify::new());
    let watcher = agent.spawn_watcher(notify.clone());
    expect_wake(&notify, Duration::from_secs(3), "the initial start").await;

    let proxy = node(&etcd, "rampart-proxy", 10).await;
    let idle = ProxyReport { drain_timeout: Some(7), drained: None };
    let p1 = proxy.register_proxy("h-1", &idle, 3, dl()).await.unwrap();
    expect_wake(&notify, Duration::from_secs(2), "a proxy registering").await;
    let (value, lease) = raw_get(&etcd, "/service/test/proxies/h-1").await.expect("key written");
    assert_eq!(value, r#"{"drain_timeout":7,"drained":null}"#);
    assert_eq!(Some(lease), p1.lease_id());
    assert_ne!(Some(lease), agent.lease_id(), "a lease of its own");
    assert!(proxy.register_proxy("a/b", &idle, 3, dl()).await.is_err(), "no '/' in an id");

    // Only changes are written; the agent's watch wakes on them.
    assert!(!p1.update(&idle, dl()).await.unwrap());
    p1.keep_alive(dl()).await.unwrap();
    expect_no_wake(&notify, Duration::from_millis(500), "an unchanged report and a keep-alive").await;
    let drained = ProxyReport { drain_timeout: Some(7), drained: Some("a".into()) };
    assert!(p1.update(&drained, dl()).await.unwrap());
    expect_wake(&notify, Duration::from_secs(2), "a proxy's report changing").await;
    let c = agent.read_cluster(dl()).await.unwrap();
    assert_eq!(c.proxies.get("h-1"), Some(&drained));
    assert_eq!(c.members.len(), 1, "{:?}", c.members);
    assert!(c.problems.is_empty(), "{:?}", c.problems);

    // A clean stop removes the key at once.
    let p2 = proxy.register_proxy("h-2", &idle, 3, dl()).await.unwrap();
    assert_eq!(agent.read_cluster(dl()).await.unwrap().proxies.len(), 2);
    p2.unregister(dl()).await.unwrap();
    assert!(raw_get(&etcd, "/service/test/proxies/h-2").await.is_none());

    // A proxy that stops keeping its lease alive disappears after the TTL ...
    let silent = Instant::now();
    while agent.read_cluster(dl()).await.unwrap().proxies.contains_key("h-1") {
        assert!(silent.elapsed() < Duration::from_secs(8), "proxy key still there after 8 s");
        sleep(Duration::from_millis(100)).await;
    }
    // ... and when it comes back, its next keep-alive puts its report back on a new lease.
    let old = p1.lease_id();
    p1.keep_alive(dl()).await.unwrap();
    assert_ne!(p1.lease_id(), old);
    assert_eq!(agent.read_cluster(dl()).await.unwrap().proxies.get("h-1"), Some(&drained));
    watcher.abort();
}

#[tokio::test]
async fn one_proxy_at_a_time_claims_the_address_and_the_other_gets_it_when_the_lease_ends() {
    init_logs();
    let etcd = Etcd::start();
    let reader = node(&etcd, "a", 10).await;
    let proxy = node(&etcd, "rampart-proxy", 10).await;
    let a = proxy.address_claim("10.0.0.5", "h-1", 2);
    let b = proxy.address_claim("10.0.0.5", "h-2", 2);
    assert_eq!(a.key(), "/service/test/proxy_vip/10.0.0.5");

    assert!(a.claim(dl()).await.unwrap(), "a free key is claimed");
    assert!(a.claim(dl()).await.unwrap(), "a renewal of one's own claim succeeds");
    assert!(!b.claim(dl()).await.unwrap(), "a second claimant is refused while the first one's lease lives");
    let (value, lease) = raw_get(&etcd, a.key()).await.expect("claim written");
    assert_eq!(value, "h-1");
    assert_ne!(Some(lease), proxy.lease_id(), "a lease of its own");
    let c = reader.read_cluster(dl()).await.unwrap();
    assert_eq!(c.proxy_addresses.get("10.0.0.5").map(String::as_str), Some("h-1"));
    assert!(c.problems.is_empty(), "{:?}", c.problems);

    // The holder stops renewing: its claim goes with its lease, and the other one gets it.
    let silent = Instant::now();
    while !b.claim(dl()).await.unwrap() {
        assert!(silent.elapsed() < Duration::from_secs(6), "the claim outlived its 2 s lease");
        sleep(Duration::from_millis(100)).await;
    }
    assert!(silent.elapsed() >= Duration::from_secs(1), "taken over after {:?}", silent.elapsed());
    assert!(!a.claim(dl()).await.unwrap(), "the former holder, back, finds the claim another's");

    // A clean release lets the other claim at once; releasing what is not one's own deletes nothing.
    a.release(dl()).await.unwrap();
    assert_eq!(raw_get(&etcd, b.key()).await.map(|v| v.0).as_deref(), Some("h-2"));
    b.release(dl()).await.unwrap();
    assert!(raw_get(&etcd, "/service/test/proxy_vip/10.0.0.5").await.is_none());
    let c2 = proxy.address_claim("10.0.0.5", "h-3", 2);
    assert!(c2.claim(dl()).await.unwrap());
}
