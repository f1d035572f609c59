//! What a quiet HA cycle costs etcd, against a real etcd: one lease keep-alive, a member key and
//! a lock written only when they change, and a watch-fed copy of the cluster that follows other
//! writers and is never offered while its watch is down or behind.

use std::sync::Arc;
use std::time::Duration;

use rampart_core::keys::ClusterPrefix;
use rampart_core::Cluster;
use rampart_dcs::{Dcs, EtcdDcs, EtcdOptions};
use rampart_kit::etcd::Etcd;
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

mod common;
use common::member;

const OP: Duration = Duration::from_millis(1500);
/// How long a copy may take to catch up on loopback.
const CATCH_UP: Duration = Duration::from_secs(2);

fn prefix() -> ClusterPrefix {
    ClusterPrefix::new("/service", "quiet")
}

async fn node(etcd: &Etcd, name: &str) -> EtcdDcs {
    let options = EtcdOptions { endpoints: vec![etcd.endpoint()], op_timeout: OP, ..Default::default() };
    EtcdDcs::connect(options, prefix(), name.to_string(), 10).await.expect("connect")
}

fn dl() -> Instant {
    Instant::now() + OP
}

async fn raw_client(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None).await.expect("raw client")
}

/// The store's revision: it moves with every write to etcd.
async fn store_revision(etcd: &Etcd) -> i64 {
    let resp = raw_client(etcd).await.get("/nothing", None).await.expect("raw get");
    resp.header().expect("header").revision()
}

/// One cycle's view as the agent gets it: a keep-alive, then the copy if it caught up with what
/// the keep-alive saw.
async fn cycle_copy(dcs: &EtcdDcs) -> Option<Cluster> {
    let kept = dcs.refresh_lease(dl()).await.expect("keep-alive");
    dcs.cached_cluster(&kept, CATCH_UP).await
}

/// Cycles until the copy satisfies `what`.
async fn copy_where(dcs: &EtcdDcs, what: &str, ok: impl Fn(&Cluster) -> bool) -> Cluster {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = cycle_copy(dcs).await.filter(&ok) {
            return c;
        }
        assert!(Instant::now() < until, "the copy never showed {what}");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_quiet_leader_writes_nothing_and_its_copy_follows_the_others() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a").await;
    let b = node(&etcd, "b").await;
    let notify = Arc::new(Notify::new());
    let watcher = a.spawn_watcher(notify.clone());
    timeout(Duration::from_secs(3), notify.notified()).await.expect("the watcher's first wake");

    a.touch_member(&member("a", 1), dl()).await.unwrap();
    assert!(a.acquire_leader(dl()).await.unwrap());
    // (Taking the lock kept the lease alive, which opened the keep-alive stream: the
    // keep-alives from now on tell the revision they saw.)
    let copy = copy_where(&a, "a's key and lock", |c| c.is_leader("a") && c.members.len() == 1).await;
    assert_eq!(copy.members[0].data.xlog_location, Some(1));

    // A quiet cycle: keep-alive, same member key, lock renewed: etcd's revision does not move.
    let before = store_revision(&etcd).await;
    for _ in 0..3 {
        let kept = a.refresh_lease(dl()).await.unwrap();
        a.touch_member(&member("a", 1), dl()).await.unwrap();
        let renewed = a.renew_leader(dl()).await.unwrap().expect("still the leader");
        assert_eq!(renewed, kept.sent, "the lock counts from the keep-alive that kept it");
    }
    assert_eq!(store_revision(&etcd).await, before, "a quiet cycle wrote to etcd");

    // A changed member key is written.
    a.touch_member(&member("a", 2), dl()).await.unwrap();
    assert!(store_revision(&etcd).await > before, "a changed member key was not written");

    // Another member's writes show in the copy.
    b.touch_member(&member("b", 5), dl()).await.unwrap();
    copy_where(&a, "b's member key", |c| c.members.iter().any(|m| m.name == "b")).await;

    // The lock deleted behind the leader's back: the copy shows it gone, and the next renewal
    // is the transaction, which puts it back.
    raw_client(&etcd).await.delete(prefix().key("leader"), None).await.expect("raw delete");
    copy_where(&a, "the lock gone", |c| c.leader.is_none()).await;
    assert!(a.renew_leader(dl()).await.unwrap().is_some());
    copy_where(&a, "the lock back", |c| c.is_leader("a")).await;
    watcher.abort();
}

#[tokio::test]
async fn no_copy_without_a_watch_nor_while_etcd_is_away() {
    let mut etcd = Etcd::start();
    let a = node(&etcd, "a").await;
    a.touch_member(&member("a", 1), dl()).await.unwrap();
    a.refresh_lease(dl()).await.unwrap();
    // No watcher: every cycle reads.
    let kept = a.refresh_lease(dl()).await.unwrap();
    assert!(a.cached_cluster(&kept, CATCH_UP).await.is_none());
    // And no member-key shortcut either: an unchanged key is written again.
    let before = store_revision(&etcd).await;
    a.touch_member(&member("a", 1), dl()).await.unwrap();
    assert!(store_revision(&etcd).await > before, "without a copy the key must be written");

    let notify = Arc::new(Notify::new());
    let watcher = a.spawn_watcher(notify.clone());
    copy_where(&a, "a's key", |c| c.members.len() == 1).await;
    let kept = a.refresh_lease(dl()).await.unwrap();
    etcd.stop();
    // The stream breaks: the copy is withdrawn, even as of a keep-alive it had caught up with.
    let until = Instant::now() + Duration::from_secs(10);
    while a.cached_cluster(&kept, Duration::from_millis(100)).await.is_some() {
        assert!(Instant::now() < until, "the copy was still offered 10 s after etcd stopped");
        sleep(Duration::from_millis(100)).await;
    }
    etcd.start_again();
    // Back: the watcher reads everything again and the copy returns.
    copy_where(&a, "a's key after etcd came back", |c| c.members.len() == 1).await;
    watcher.abort();
}
