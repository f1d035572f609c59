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

#[tokio::test]
async fn tls_and_a_password_on_three_members() {
    use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
    let dir = TestDir::new("etcd-tls-members");
    let mut members = Etcd::start_tls_members(dir.path(), 3);
    let tls = members[0].tls().expect("TLS files").clone();
    let endpoints: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    // The harness's own client turns on etcd's authentication, with a root user.
    let read = |p: &std::path::Path| std::fs::read(p).expect("certificate file");
    let root_tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca)))
        .identity(Identity::from_pem(read(&tls.client_cert), read(&tls.client_key)));
    let connect = ConnectOptions::new().with_tls(root_tls);
    let mut root = etcd_client::Client::connect(endpoints.clone(), Some(connect)).await.expect("root client");
    let until = Instant::now() + Duration::from_secs(10);
    while root.user_add("root", "tls-and-pw", None).await.is_err() {
        assert!(Instant::now() < until, "etcd never accepted the root user (no leader?)");
        sleep(Duration::from_millis(200)).await;
    }
    root.user_grant_role("root", "root").await.expect("grant root");
    root.auth_enable().await.expect("auth enable");

    // Endpoints as Patroni's `etcd3.hosts` lists them (no scheme): https because of the files.
    let with = |password: &str| {
        let options = EtcdOptions {
            endpoints: endpoints.iter().map(|e| e.replace("https://", "")).collect(),
            op_timeout: OP,
            username: Some("root".into()),
            password: Some(password.into()),
            ca_file: Some(tls.ca.clone()),
            cert_file: Some(tls.client_cert.clone()),
            key_file: Some(tls.client_key.clone()),
        };
        EtcdDcs::connect(options, ClusterPrefix::new("/service", "tls"), "a".to_string(), 10)
    };
    let good = with("tls-and-pw").await.expect("connect");
    assert!(good.acquire_leader(Instant::now() + Duration::from_secs(5)).await.expect("lock over TLS with a password"));
    assert!(good.read_cluster(Instant::now() + OP).await.expect("read").is_leader("a"));

    // The first member goes: the others authenticate this client on first use and carry on.
    members[0].stop();
    good.touch_member(&member("a", 2), Instant::now() + Duration::from_secs(5))
        .await
        .expect("write via another member");
    assert!(good.renew_leader(Instant::now() + OP).await.expect("renew").is_some());
    assert!(good.read_cluster(Instant::now() + OP).await.expect("read").members.iter().any(|m| m.name == "a"));

    // A wrong password is refused with a clear error that does not repeat it.
    let bad = with("not-the-password").await.expect("connect");
    let err = bad.read_cluster(Instant::now() + OP).await.expect_err("wrong password");
    assert!(matches!(err, rampart_dcs::DcsError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
}
