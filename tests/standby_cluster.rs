//! Story: an operator used to Patroni's standby clusters writes `standby_cluster` into a
//! member's `bootstrap.dcs`, then into the running cluster's configuration. Rampart does not
//! support standby clusters yet (a standby leader would run as an independent primary), and must
//! not ignore the key: `check-config`, `PATCH /config` and `edit-config` refuse it naming the key,
//! and when another tool writes it into the DCS anyway, no member takes the leader lock: after
//! the leader stops, the replica stays a replica and says why.

mod support;

use std::process::Output;
use std::time::Duration;

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

const NOT_SUPPORTED: &str = "standby clusters are not supported yet";

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_cluster_is_refused_and_never_makes_a_primary() {
    let mut c = Cluster::start(2, ClusterOptions { stagger: Duration::from_millis(1500), ..Default::default() });
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a healthy cluster");
    let replica = 1 - leader;
    let config_key = format!("{}config", c.dcs_prefix());
    let before = c.etcd().get(&config_key).expect("the config key");

    // check-config: in bootstrap.dcs, and at the top of the file.
    for (what, yaml) in
        [("bootstrap.dcs", "    standby_cluster:\n      host: 10.0.0.9\n      port: 5432\n"), ("top level", "")]
    {
        let mut cfg = c.node(0).config.clone();
        if yaml.is_empty() {
            cfg = cfg.extra_yaml("standby_cluster:\n  host: 10.0.0.9\n");
        } else {
            cfg.dcs_yaml.push_str(yaml);
        }
        let file = c.dir().join(format!("standby-{}.yml", what.replace(' ', "-")));
        cfg.write(&file).unwrap();
        let o = c.rampart([std::ffi::OsStr::new("check-config"), file.as_os_str()]);
        let out = text(&o);
        assert!(!o.status.success(), "check-config accepted standby_cluster ({what}):\n{out}");
        assert!(out.contains("standby_cluster") && out.contains(NOT_SUPPORTED), "{what}:\n{out}");
    }

    // PATCH /config and edit-config refuse it; nothing is written.
    let patch = r#"{"standby_cluster": {"host": "10.0.0.9", "port": 5432}}"#;
    let r = support::http_request(c.api_port(leader), "PATCH", "/config", Some(patch)).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("standby_cluster") && r.body.contains(NOT_SUPPORTED), "{}", r.body);
    let cfg = c.config_path(0).display().to_string();
    let o = c.rampart(["edit-config", "-c", &cfg, "-s", "standby_cluster.host=10.0.0.9", "--force"]);
    assert!(!o.status.success() && text(&o).contains(NOT_SUPPORTED), "{}", text(&o));
    assert_eq!(c.etcd().get(&config_key).as_ref(), Some(&before), "refusals write nothing");

    // Another tool writes it straight into the DCS; then the leader stops.
    let mut written: serde_json::Value = serde_json::from_str(&before).unwrap();
    written["standby_cluster"] = serde_json::json!({"host": "10.0.0.9", "port": 5432});
    c.etcd().put(&config_key, &written.to_string());
    assert!(c.stop_agent(leader, Duration::from_secs(60)), "the leader's agent stops");

    // The replica would race for the free lock now; it says why it does not, and stays a replica.
    let log = c.log_path(replica).to_path_buf();
    let said = support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("not taking the leader lock")
    });
    assert!(said, "the replica never said it keeps out of the race:\n{}", support::tail_file(&log, 30));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains(&format!("standby_cluster is set in the dynamic configuration: {NOT_SUPPORTED}")));
    assert_eq!(c.leader_name(), None, "nobody took the leader lock");
    assert_eq!(support::is_in_recovery(c.pg_port(replica)).await, Some(true), "the replica was not promoted");
}
