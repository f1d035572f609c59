//! Story: an operator brings a Patroni configuration and its habits to Rampart.
//!
//! 1. `bootstrap.dcs` still says `wal_keep_segments: 5` (gone since PostgreSQL 13): the cluster
//!    comes up anyway, with `wal_keep_size = 80MB`, as under Patroni.
//! 2. Values PostgreSQL would refuse at its next start (`max_connections: lots`,
//!    `shared_buffers: 999TB`) are refused by `check-config`, `PATCH`/`PUT /config` and
//!    `edit-config`, each naming the parameter, and the `config` key in etcd is not touched; a
//!    reload of a member file that gained one is refused.
//! 3. Patroni's forms are accepted: an `etcd` (v2) section instead of `etcd3` (its hosts are used
//!    with the v3 API), `PATCH {"ttl": 20}` over loop_wait 2 / retry_timeout 10 lowers the two as
//!    Patroni does, and the permanent-slot shorthand `{"slots": {"name": 0}}` makes a physical slot.
//! 4. A custom `bootstrap.method` runs its command instead of initdb; when it fails the agent
//!    stops after one attempt with the data directory kept aside, and with a working command the
//!    cluster comes up from what the command built.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

fn config_key(c: &Cluster) -> Option<String> {
    c.etcd().get(&format!("{}config", c.dcs_prefix()))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_values_are_checked_as_postgresql_reads_them_and_patroni_forms_accepted() {
    let c = Cluster::start(
        1,
        ClusterOptions::default().tweak(|_, mut n| {
            n.dcs_parameters.push(("wal_keep_segments".into(), "5".into()));
            n
        }),
    );
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("the cluster comes up despite wal_keep_segments");
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    let size: String = db.query_one("SHOW wal_keep_size", &[]).await.unwrap().get(0);
    assert_eq!(size, "80MB", "wal_keep_segments 5 × 16MB");
    let conf = std::fs::read_to_string(c.data_dir(leader).join("postgresql.conf")).unwrap();
    assert!(!conf.contains("wal_keep_segments"), "never written as is:\n{conf}");

    // check-config on the member's file with a value PostgreSQL would refuse.
    let good = std::fs::read_to_string(c.config_path(leader)).unwrap();
    let bad_file = c.dir().join("bad.yml");
    let bad = good.replace(
        "    password_encryption: scram-sha-256",
        "    password_encryption: scram-sha-256\n    shared_buffers: 999TB",
    );
    std::fs::write(&bad_file, bad).unwrap();
    let o = c.rampart(["check-config", bad_file.to_str().unwrap()]);
    assert!(!o.status.success(), "check-config accepted shared_buffers: 999TB");
    assert!(
        stderr(&o)
            .contains("postgresql.parameters.shared_buffers: invalid value \"999TB\": value exceeds integer range"),
        "{}",
        stderr(&o)
    );
    assert!(c.rampart(["check-config", c.config_path(leader).to_str().unwrap()]).status.success());

    // Seed 002's Patroni etcd (v2) section: its hosts are used with the v3 API, with a warning.
    let v2_file = c.dir().join("etcd-v2.yml");
    std::fs::write(&v2_file, good.replace("etcd3:", "etcd:")).unwrap();
    let o = c.rampart(["check-config", v2_file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("etcd: Rampart speaks only etcd's v3 API"), "{}", stderr(&o));
    let o = c.rampart(["list", "-c", v2_file.to_str().unwrap(), "-f", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["Member"], c.name(leader), "the cluster is reached through the etcd section's hosts");

    // PATCH and PUT /config, and edit-config: refused, naming the parameter; nothing written.
    let before = config_key(&c).expect("config key");
    let api = c.api_port(leader);
    for body in [
        r#"{"postgresql": {"parameters": {"max_connections": "lots"}}}"#,
        r#"{"postgresql": {"parameters": {"shared_buffers": "999TB"}}}"#,
    ] {
        for method in ["PATCH", "PUT"] {
            let r = support::http_request(api, method, "/config", Some(body)).unwrap();
            assert_eq!(r.status, 400, "{method} {body}: {}", r.body);
            assert!(r.body.starts_with("invalid configuration: postgresql.parameters."), "{method} {body}: {}", r.body);
        }
    }
    let r = support::http_request(
        api,
        "PATCH",
        "/config",
        Some(r#"{"postgresql": {"parameters": {"max_connections": "lots"}}}"#),
    )
    .unwrap();
    assert_eq!(r.body, "invalid configuration: postgresql.parameters.max_connections: invalid value \"lots\": not a number (an integer from 1 to 262143)");
    let cfg = c.config_path(leader).to_str().unwrap().to_string();
    for setting in ["max_connections=lots", "shared_buffers=999TB"] {
        let o = c.rampart(["edit-config", "-c", &cfg, "-p", setting, "--force"]);
        let name = setting.split('=').next().unwrap();
        assert!(!o.status.success(), "edit-config -p {setting} was accepted");
        assert!(
            stderr(&o).contains(&format!("edit-config: postgresql.parameters.{name}: invalid value")),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(config_key(&c).as_ref(), Some(&before), "refusals write nothing");

    // A reload of a member file that gained such a value is refused; the running settings stay.
    let node_file = c.config_path(leader).to_path_buf();
    std::fs::write(
        &node_file,
        good.replace(
            "    password_encryption: scram-sha-256",
            "    password_encryption: scram-sha-256\n    max_connections: lots",
        ),
    )
    .unwrap();
    let r = support::http_request(api, "POST", "/reload", None).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("postgresql.parameters.max_connections: invalid value \"lots\""), "{}", r.body);
    std::fs::write(&node_file, &good).unwrap();

    // Values PostgreSQL reads are accepted, units and all.
    let r =
        support::http_request(api, "PATCH", "/config", Some(r#"{"postgresql": {"parameters": {"work_mem": "8MB"}}}"#))
            .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Patroni's acceptance suite: ttl 20 over loop_wait 2 / retry_timeout 10 is lowered, not refused.
    let r = support::http_request(api, "PATCH", "/config", Some(r#"{"ttl": 30, "loop_wait": 2, "retry_timeout": 10}"#))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = support::http_request(api, "PATCH", "/config", Some(r#"{"ttl": 20}"#)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let stored: Value = serde_json::from_str(&config_key(&c).unwrap()).unwrap();
    assert_eq!(
        (stored["ttl"].as_u64(), stored["loop_wait"].as_u64(), stored["retry_timeout"].as_u64()),
        (Some(20), Some(1), Some(9))
    );

    // The permanent-slot shorthand: `name: 0` is a physical slot, created on the leader.
    let r = support::http_request(api, "PATCH", "/config", Some(r#"{"slots": {"keep_me": 0}}"#)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let created = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(250), || async {
        db.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'keep_me' AND slot_type = 'physical'", &[])
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(created, "the permanent slot keep_me was not created");
}

/// A custom bootstrap script: runs initdb itself (without data checksums, unlike
/// `bootstrap.initdb`) and records how it was called. With `FAIL` it leaves a half-made data
/// directory and fails.
fn write_script(path: &Path, fail: bool) {
    let bin = support::pg_bin_dir();
    let body = if fail {
        "mkdir -p \"$datadir\" && echo half-made > \"$datadir/partial\"\necho \"$*\" > \"$marker\"\nexit 3\n"
            .to_string()
    } else {
        format!(
            "\"{}/initdb\" --pgdata=\"$datadir\" --username=postgres --pwfile=\"$pwfile\" >/dev/null\necho \"$*\" > \"$marker\"\n",
            bin.display()
        )
    };
    let script = format!(
        "#!/bin/sh\nset -e\nfor a in \"$@\"; do\n  case \"$a\" in\n    --datadir=*) datadir=\"${{a#--datadir=}}\" ;;\n    \
         --pwfile=*) pwfile=\"${{a#--pwfile=}}\" ;;\n    --marker=*) marker=\"${{a#--marker=}}\" ;;\n  esac\ndone\n{body}"
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_bootstrap_method_runs_its_command_instead_of_initdb() {
    let mut c = Cluster::start(1, ClusterOptions { start_agents: false, ..Default::default() });
    let node_dir = c.data_dir(0).parent().unwrap().to_path_buf();
    let (script, marker, pwfile) = (node_dir.join("restore.sh"), node_dir.join("marker"), node_dir.join("pwfile"));
    std::fs::write(&pwfile, support::SUPERUSER_PASSWORD).unwrap();
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut config = c.node(0).config.clone();
    config.bootstrap_yaml = format!(
        "  method: restore\n  restore:\n    command: {}\n    marker: {}\n    pwfile: {}\n",
        script.display(),
        marker.display(),
        pwfile.display()
    );
    config.write(c.config_path(0)).unwrap();

    // A failing method: one attempt, then the agent stops; the data directory is kept aside.
    write_script(&script, true);
    c.start_agent(0);
    let status = c.agent_mut(0).wait_exit(Duration::from_secs(60)).expect("the agent stops after a failed bootstrap");
    assert!(!status.success());
    let failed = Path::new(&format!("{}.failed", c.data_dir(0).display())).join("partial");
    assert!(failed.is_file(), "what the failed attempt left is kept in <data_dir>.failed");
    assert!(c.etcd().get(&format!("{}initialize", c.dcs_prefix())).is_none(), "the initialize key is removed");
    let log = std::fs::read_to_string(c.log_path(0)).unwrap();
    assert_eq!(log.matches("Running custom bootstrap script").count(), 1, "bootstrapped once, not in a loop");
    assert!(log.contains("Failed to bootstrap cluster"), "{log}");

    // A working method: the cluster is made by the command, not by initdb.
    write_script(&script, false);
    c.start_agent(0);
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("the custom-bootstrapped node leads");
    let called = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        called.trim(),
        format!(
            "--scope=postgres --datadir={} --marker={} --pwfile={}",
            c.data_dir(0).display(),
            marker.display(),
            pwfile.display()
        )
    );
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    let checksums: String = db.query_one("SHOW data_checksums", &[]).await.unwrap().get(0);
    assert_eq!(checksums, "off", "bootstrap.initdb (with data-checksums) did not run");
    assert!(!support::query_one_bool(&db, "SELECT pg_is_in_recovery()").await.unwrap());
    let sysid = c.etcd().get(&format!("{}initialize", c.dcs_prefix())).expect("initialize key");
    assert!(sysid.parse::<u64>().is_ok(), "initialize holds the system identifier: {sysid}");
}
