//! Exercises the harness for tests with several hosts (tests/support/netns.rs and
//! `ClusterOptions::in_namespaces`), without needing the virtual IP feature: a cluster whose
//! members, etcd and a client each have a network namespace of their own forms and serves the
//! client host; the agent user may change addresses only with the network capabilities the kit
//! can give it; the address observers and the pulled plug do what they say.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::{is_streaming_replica, wait_healthy};
use support::netns::{Host, Net, INTERFACE, PREFIX_LEN, SAMPLE_EVERY};
use support::process::{run_as, start_in_netns, AmbientCaps};
use support::TestDir;

/// `ip addr <verb> <addr>/24 dev eth0` in `host`'s namespace, run as the agent's user with `caps`.
fn ip_addr_as_agent_user(host: &Host, verb: &str, addr: Ipv4Addr, caps: AmbientCaps) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["addr", verb, &format!("{addr}/{PREFIX_LEN}"), "dev", INTERFACE]);
    start_in_netns(&mut cmd, host.netns.as_deref().expect("a namespace"), run_as().switch_to, caps);
    cmd.output().expect("running ip")
}

/// The `CapAmb` mask of process `pid`.
fn ambient_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let mask = status.lines().find_map(|l| l.strip_prefix("CapAmb:")).expect("CapAmb line");
    u64::from_str_radix(mask.trim(), 16).expect("hex mask")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_in_namespaces_forms_and_serves_the_client_host() {
    let c = Cluster::start(2, ClusterOptions::default().with_vip());
    let leader = wait_healthy(&c, Duration::from_secs(60)).expect("a leader and a streaming replica");
    let replica = 1 - leader;
    assert!(is_streaming_replica(&c, replica, None));
    for i in 0..2 {
        assert_eq!(c.addr(i), c.host(i).addr, "node {i} listens on its host's address");
        assert!(!c.addr(i).is_loopback());
        // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), nothing else.
        assert_eq!(ambient_caps(c.agent(i).pid()), (1 << 12) | (1 << 13), "agent {i}'s ambient capabilities");
        let config = std::fs::read_to_string(c.config_path(i)).unwrap();
        assert!(config.contains(&format!("vip:\n  ip: {}\n  netmask: 24\n  interface: eth0\n", c.vip())), "{config}");
    }
    assert_eq!(c.primaries_by_sql().await, vec![leader], "reached from the test's own namespace");

    let db = c.connect_from_client(c.addr(leader), c.pg_port(leader)).await.expect("client host to the leader");
    let row = db.query_one("SELECT inet_client_addr()::text, pg_is_in_recovery()", &[]).await.unwrap();
    let (from, recovering): (String, bool) = (row.get(0), row.get(1));
    assert_eq!(from, format!("{}/32", c.client().addr), "the connection came from the client host");
    assert!(!recovering);
}

#[test]
fn only_the_net_capabilities_let_the_agent_user_add_an_address() {
    let dir = TestDir::new("netns");
    let net = Net::require(dir.path(), &["a", "b"]);
    let (a, spare) = (net.host("a"), net.spare_addr());
    let sampler = net.sample(spare);

    let refused = ip_addr_as_agent_user(a, "add", spare, AmbientCaps::None);
    assert!(!refused.status.success(), "added without capabilities");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Operation not permitted"), "{refused:?}");
    assert!(net.holders(spare).is_empty());

    let added = ip_addr_as_agent_user(a, "add", spare, AmbientCaps::Net);
    assert!(added.status.success(), "{added:?}");
    assert_eq!(net.holders(spare), ["a"]);
    std::thread::sleep(SAMPLE_EVERY * 3);
    assert!(sampler.held_alone_since("a").is_some(), "{:?}", sampler.samples());
    assert!(sampler.double_holdings().is_empty());

    // The plug: with a's link down the bridge (the test's 10.77.<n>.1) is out of its reach.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let [o1, o2, o3, _] = spare.octets();
    let bridge = SocketAddr::from((Ipv4Addr::new(o1, o2, o3, 1), listener.local_addr().unwrap().port()));
    let reach = || a.tcp_connect(bridge, Duration::from_secs(1)).is_ok();
    assert!(reach());
    net.link_down(a);
    assert!(!reach(), "reached the bridge with the link down");
    assert_eq!(net.holders(spare), ["a"], "a host keeps its addresses with the link down");
    net.link_up(a);
    assert!(support::wait_until(Duration::from_secs(5), Duration::from_millis(100), reach), "link back up");

    let deleted = ip_addr_as_agent_user(a, "del", spare, AmbientCaps::Net);
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(net.holders(spare).is_empty());
    std::thread::sleep(SAMPLE_EVERY * 3);
    assert!(sampler.held_alone_since("a").is_none());
    let samples = sampler.samples();
    assert!(samples.iter().any(|s| s.holders == ["a"]) && samples.last().unwrap().holders.is_empty());
}
