//! The client learns the etcd cluster's members, against a real three-member etcd: an agent told
//! of one member only goes on working through the others once that member is gone.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rampart_core::keys::ClusterPrefix;
use rampart_core::MemberData;
use rampart_dcs::{Dcs, EtcdDcs, EtcdOptions};
use rampart_kit::dir::TestDir;
use rampart_kit::etcd::Etcd;
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

mod common;
use common::member;

const OP: Duration = Duration::from_millis(1500);

async fn node(endpoint: String, name: &str) -> EtcdDcs {
    let options = EtcdOptions { endpoints: vec![endpoint], op_timeout: OP, ..Default::default() };
    EtcdDcs::connect(options, ClusterPrefix::new("/service", "members"), name.to_string(), 10).await.expect("connect")
}

#[tokio::test]
async fn an_agent_told_of_one_member_uses_the_others_once_it_is_gone() {
    let dir = TestDir::new("etcd-members");
    let mut members = Etcd::start_members(dir.path(), &vec![(Ipv4Addr::LOCALHOST, None); 3]);
    let first = members[0].endpoint();
    // Both know only the first member; only `learner` runs a watcher, which reads the list.
    let learner = node(first.clone(), "learner").await;
    let unaware = node(first, "unaware").await;
    let notify = Arc::new(Notify::new());
    let watcher = learner.spawn_watcher(notify.clone());
    timeout(Duration::from_secs(5), notify.notified()).await.expect("the watch is established");
    learner.touch_member(&member("learner", 1), Instant::now() + OP).await.expect("first write");
    unaware.touch_member(&member("unaware", 1), Instant::now() + OP).await.expect("first write");
    // The list is read right after the stream is established.
    sleep(Duration::from_secs(1)).await;

    members[0].stop();
    // Two of three members still make a quorum: the learner reads and writes through them.
    let read =
        learner.read_cluster(Instant::now() + Duration::from_secs(5)).await.expect("read through another member");
    assert!(read.members.iter().any(|m| m.name == "learner"), "{:?}", read.members);
    learner
        .touch_member(&MemberData { state: "streaming".into(), ..member("learner", 1) }, Instant::now() + OP)
        .await
        .expect("write through another member");
    learner.refresh_lease(Instant::now() + OP).await.expect("keep-alive through another member");
    // The client told of one member, which did not ask for the list, has nowhere to go.
    let failed = unaware.read_cluster(Instant::now() + OP).await;
    assert!(failed.is_err(), "a client that knows only the stopped member still reached etcd");
    watcher.abort();
}
