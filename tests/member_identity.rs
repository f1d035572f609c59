//! Story: an operator starts a second agent under the name of a live member, once by copying its
//! file with only the REST port changed (the same data directory), once for a new host (its own,
//! empty, data directory). Patroni refuses both: `Can't start; there is already a node named
//! '<name>' running`, CRITICAL, exit 1. So must Rampart, before touching anything: the cluster
//! keeps its leader (same leader key, same timeline, the same postmaster still running under the
//! first agent) and the leader's member key still points at the first agent.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::{timeline, wait_healthy};
use support::NodeConfig;

/// The log format Patroni's acceptance suite gives every member; it reads the level of a line at
/// column 24 (`line[24:24 + len('CRITICAL')]`).
const ACCEPTANCE_FORMAT: &str = "'%(asctime)s %(levelname)s [%(pathname)s:%(lineno)d - %(funcName)s]: %(message)s'";

/// Runs `rampart agent` on `config` until it exits by itself (it must); its exit code and output.
fn start_duplicate(config: &NodeConfig, file: &Path) -> (Option<i32>, String) {
    config.write(file).unwrap();
    let out = support::agent::run_to_exit(
        &support::rampart_bin(),
        &[OsStr::new("agent"), file.as_os_str()],
        file.parent().unwrap(),
        &[],
        Duration::from_secs(60),
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The `api_url` of a member key's value.
fn api_url(member: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(member).expect("a member key holds JSON");
    v["api_url"].as_str().expect("api_url").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_a_live_members_name_is_refused_and_the_leader_stays() {
    let mut c = Cluster::start(2, ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() });
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a healthy cluster");
    let name = c.name(leader).to_string();
    let tl = timeline(&c, leader).expect("the leader's timeline");
    let postmaster = c.agent(leader).postmaster_pid().expect("the leader's postmaster");
    let member_key = format!("{}members/{name}", c.dcs_prefix());
    let member_before = c.etcd().get(&member_key).expect("the leader's member key");
    let expected = format!("Can't start; there is already a node named '{name}' running");

    // The same file with another REST port: same name, same data directory, same PostgreSQL port.
    let dup_dir = support::dir::make_agent_dir(&c.dir().join("dup-same"));
    let mut same = c.node(leader).config.clone().extra_yaml(&format!("log:\n  format: {ACCEPTANCE_FORMAT}\n"));
    same.api_port = support::free_port();
    let (code, out) = start_duplicate(&same, &dup_dir.join("rampart.yml"));
    println!("duplicate with the same data directory: exit {code:?}\n{out}");
    assert_eq!(code, Some(1), "refused with exit 1:\n{out}");
    let line = out.lines().find(|l| l.contains(&expected)).unwrap_or_else(|| panic!("Patroni's message in:\n{out}"));
    assert_eq!(line.get(24..32), Some("CRITICAL"), "the level where Patroni's suite reads it: {line}");

    // A new host's file: same name, its own empty data directory and ports.
    let new_dir = support::dir::make_agent_dir(&c.dir().join("dup-new"));
    let other = NodeConfig::new(7, &new_dir, &c.etcd().host()).name(&name).timing(10, 1, 3);
    let (code, out) = start_duplicate(&other, &new_dir.join("rampart.yml"));
    println!("duplicate with its own data directory: exit {code:?}\n{out}");
    assert_eq!(code, Some(1), "refused with exit 1:\n{out}");
    assert!(out.contains(&expected), "Patroni's message in:\n{out}");
    assert!(!other.data_dir.exists(), "the refused agent created its data directory");

    // Nothing moved: no failover, the first agent and its PostgreSQL run on as before.
    assert_eq!(c.leader_name().as_deref(), Some(name.as_str()), "the leader key");
    assert_eq!(timeline(&c, leader), Some(tl), "the timeline");
    assert_eq!(c.agent(leader).postmaster_pid(), Some(postmaster), "the same postmaster");
    assert!(support::process::is_alive(postmaster), "the leader's PostgreSQL runs");
    assert!(c.agent_mut(leader).is_running(), "the first agent runs");
    // The member key is rewritten every cycle (its WAL position moves); its address must not.
    let member_now = c.etcd().get(&member_key).expect("the leader's member key");
    assert_eq!(api_url(&member_now), api_url(&member_before), "the member key still points at the first agent");
    assert_eq!(wait_healthy(&c, Duration::from_secs(30)), Some(leader), "still healthy, same leader");
}
