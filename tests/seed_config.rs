//! Story: an operator follows the Patroni + HAProxy guide of seed 000 to the letter and hands
//! Rampart the configuration it builds (tests/fixtures/seed000.yml: the guide's YAML fragments,
//! verbatim, Japanese comments and tab-indented `users:` lines included). Only what cannot be
//! kept when three nodes and etcd share one machine's loopback is changed:
//! * 192.168.5.x addresses are 127.0.0.1;
//! * ports, `data_dir` and `pgpass` are placeholders ({{RESTAPI_PORT}}, {{ETCD_PORT}},
//!   {{PG_PORT}}, {{DATA_DIR}}, {{PGPASS}}) this test fills with free ports and test directories;
//! * `name: postgres01` becomes postgres02 and postgres03 on the other nodes, as the guide says.
//!
//! `unix_socket_directories: '.'` is kept as the guide has it, even though it puts the socket
//! inside the data directory, where pg_rewind cannot copy it (a former primary could not rejoin
//! after a failover): this story only bootstraps, and Rampart warns about it.
//!
//! With the guide's own timing (ttl 30, loop_wait 10, retry_timeout 10) the three agents must
//! elect one leader with two streaming replicas, create the guide's `admin` user, and look to
//! Patroni's `patronictl` like any Patroni cluster.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

const FIXTURE: &str = include_str!("fixtures/seed000.yml");

/// The seed's configuration for node `i` of `c`.
fn seed_config(c: &Cluster, i: usize) -> String {
    let cfg = &c.node(i).config;
    let text = FIXTURE
        .replace("name: postgres01", &format!("name: {}", cfg.name))
        .replace("{{RESTAPI_PORT}}", &cfg.api_port.to_string())
        .replace("{{ETCD_PORT}}", &c.etcd().client_port().to_string())
        .replace("{{PG_PORT}}", &cfg.pg_port.to_string())
        .replace("{{DATA_DIR}}", &cfg.data_dir.display().to_string())
        .replace("{{PGPASS}}", &cfg.pgpass.display().to_string());
    assert!(!text.contains("{{"), "a placeholder was left unfilled:\n{text}");
    text
}

fn write_owned(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    support::process::chown_to_agent_user(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_configuration_on_loopback_bootstraps_a_three_node_cluster() {
    assert!(FIXTURE.contains("\t\tusers:"), "the fixture lost the seed's tab-indented `users:` line");
    let options = ClusterOptions { start_agents: false, ..ClusterOptions::default() }
        .tweak(|i, cfg| cfg.name(&format!("postgres{:02}", i + 1)));
    let mut c = Cluster::start(3, options);
    for i in 0..3 {
        write_owned(c.config_path(i), &seed_config(&c, i));
    }

    // Rampart accepts the file as it is, warning about what an operator should fix.
    let out = c.rampart([Path::new("check-config"), c.config_path(0)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("check-config: {}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "the seed's configuration is refused:\n{stderr}");
    let users_line = FIXTURE.lines().position(|l| l == "\t\tusers:").unwrap() + 1;
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains(&format!(":{users_line}:")) && l.contains("tab")),
        "no warning about the tab-indented line {users_line}:\n{stderr}"
    );
    assert!(stderr.contains("unix_socket_directories"), "no warning about the relative socket directory:\n{stderr}");

    let started = Instant::now();
    for i in 0..3 {
        c.start_agent(i);
    }
    let leader = wait_healthy(&c, Duration::from_secs(120)).expect("one leader and two streaming replicas");
    println!("healthy after {:?}: leader {}", started.elapsed(), c.name(leader));
    assert_eq!(c.nodes_answering("/primary", 200), vec![leader]);
    assert_eq!(c.primaries_by_sql().await, vec![leader], "only the leader is writable");

    // bootstrap.users: `admin` with password `admin`, CREATEROLE and CREATEDB, over TCP through
    // the seed's `host all all 0.0.0.0/0 scram-sha-256` rule.
    let admin = support::connect(c.pg_port(leader), "admin", "admin").await.expect("log in as admin/admin");
    let row = admin
        .query_one("SELECT rolcreaterole, rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap();
    let (createrole, createdb, superuser): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    assert!(createrole && createdb, "admin has CREATEROLE {createrole}, CREATEDB {createdb}");
    assert!(!superuser, "admin was not asked to be a superuser");
    assert!(support::connect(c.pg_port(leader), "admin", "wrong").await.is_err(), "admin's password is checked");
    // The role reached the replicas with the rest of the cluster.
    for r in (0..3).filter(|&i| i != leader) {
        let replica = support::connect(c.pg_port(r), "admin", "admin").await.expect("admin on a replica");
        assert!(support::query_one_bool(&replica, "SELECT pg_is_in_recovery()").await.unwrap());
    }

    // Patroni's patronictl sees postgres01..03 with one Leader. Patroni reads YAML with PyYAML,
    // which refuses the tab-indented lines the guide contains, so patronictl gets the same file
    // with those lines indented as Rampart reads them (4 spaces).
    let for_patroni = c.dir().join("patronictl.yml");
    let untabbed: String = seed_config(&c, 0).lines().map(|l| l.replacen("\t\t", "    ", 1) + "\n").collect::<String>();
    write_owned(&for_patroni, &untabbed);
    let ok = support::wait_until(Duration::from_secs(30), Duration::from_secs(1), || {
        let out = support::patronictl(&for_patroni, &["list"]);
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success()
            && (1..=3).all(|n| text.contains(&format!("postgres{n:02}")))
            && text.matches("| Leader ").count() == 1
            && text.matches("| Replica ").count() == 2
            && text.matches("streaming").count() == 2
    });
    let out = support::patronictl(&for_patroni, &["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("patronictl list:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(ok, "patronictl list does not show postgres01..03 with one Leader and two streaming Replicas");
    assert!(text.lines().any(|l| l.contains(c.name(leader)) && l.contains("| Leader ")), "{text}");
}
