//! Exercises the e2e harness itself (tests/support), without needing a working agent: etcd start,
//! stop and restart on the same ports, test directory ownership, node configuration, the HTTP
//! helper, and the agent handle's process management (driven by a stand-in shell script that
//! starts a real PostgreSQL in its own session, as the agent does).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use support::process::{is_alive, run_as};
use support::{Agent, Etcd, NodeConfig, TestDir};

/// uid the harness gives files to and runs the agent as.
fn agent_uid() -> u32 {
    match run_as().switch_to {
        Some((uid, _)) => uid,
        None => nix::unistd::getuid().as_raw(),
    }
}

fn uid_of_process(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    line.split_whitespace().nth(2).expect("effective uid").parse().expect("numeric uid")
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| support::free_port()).collect();
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ports.len(), "free_port handed out a port twice: {ports:?}");
    for p in ports {
        std::net::TcpListener::bind(("127.0.0.1", p)).unwrap_or_else(|e| panic!("port {p} is not free: {e}"));
    }
}

#[test]
fn wait_until_returns_true_when_ready_and_false_on_timeout() {
    let start = Instant::now();
    let mut calls = 0;
    assert!(support::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        calls += 1;
        calls == 3
    }));
    assert_eq!(calls, 3);
    assert!(start.elapsed() < Duration::from_secs(2));

    let start = Instant::now();
    assert!(!support::wait_until(Duration::from_millis(200), Duration::from_millis(50), || false));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn wait_until_async_polls_a_future() {
    let mut calls = 0;
    let ok = support::wait_until_async(Duration::from_secs(5), Duration::from_millis(10), || {
        calls += 1;
        let done = calls >= 2;
        async move { done }
    })
    .await;
    assert!(ok);
    assert!(
        !support::wait_until_async(Duration::from_millis(100), Duration::from_millis(20), || async { false }).await
    );
}

#[test]
fn test_dir_is_owned_by_the_agent_user_and_removed_on_drop() {
    let dir = TestDir::new("smoke");
    let path = dir.path().to_path_buf();
    assert!(path.starts_with("/tmp"), "{}", path.display());
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), agent_uid(), "test dir must belong to {}", run_as().user);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(path.join(".harness-owner").is_file());

    let sub = dir.subdir("a/b");
    for p in [path.join("a"), sub.clone()] {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.uid(), agent_uid(), "{} has the wrong owner", p.display());
    }
    if support::keep_test_dirs() {
        return;
    }
    drop(dir);
    assert!(!path.exists(), "{} was not removed", path.display());
}

#[test]
fn etcd_starts_stops_and_restarts_on_the_same_ports() {
    let mut etcd = Etcd::start();
    assert!(etcd.is_healthy());
    let (client, peer) = (etcd.client_port(), etcd.peer_port());
    assert_ne!(client, peer);
    assert_eq!(etcd.endpoint(), format!("http://127.0.0.1:{client}"));
    assert_eq!(etcd.host(), format!("127.0.0.1:{client}"));

    // The HTTP helpers against a real server.
    assert_eq!(support::http_status(client, "GET", "/health"), 200);
    let version = support::get_json(client, "/version").expect("/version is JSON");
    assert!(version.get("etcdserver").is_some(), "{version}");
    assert_eq!(support::http_status(client, "GET", "/no-such-path"), 404);

    etcd.put("/harness/smoke", "survives restarts");
    assert_eq!(etcd.get("/harness/smoke").as_deref(), Some("survives restarts"));
    assert_eq!(etcd.keys("/harness/"), vec!["/harness/smoke".to_string()]);
    assert_eq!(etcd.get("/harness/absent"), None);

    let pid = etcd.pid().unwrap();
    etcd.stop();
    assert!(!is_alive(pid), "etcd {pid} still alive after stop()");
    assert!(!etcd.is_running());
    assert!(!etcd.is_healthy());
    assert_eq!(support::http_status(client, "GET", "/health"), 0);

    etcd.start_again();
    assert_eq!((etcd.client_port(), etcd.peer_port()), (client, peer));
    assert!(etcd.is_healthy());
    assert_ne!(etcd.pid(), Some(pid));
    assert_eq!(etcd.get("/harness/smoke").as_deref(), Some("survives restarts"), "data dir was not reused");

    etcd.freeze();
    assert!(!etcd.is_healthy(), "a frozen etcd must not answer");
    etcd.thaw();
    assert!(etcd.wait_healthy(Duration::from_secs(10)));

    let pid = etcd.pid().unwrap();
    let dir = etcd.dir().to_path_buf();
    drop(etcd);
    assert!(!is_alive(pid), "etcd {pid} still alive after drop");
    if !support::keep_test_dirs() {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
}

#[test]
fn node_config_is_patroni_yaml_with_the_expected_keys() {
    let dir = TestDir::new("smoke-config");
    let node_dir = dir.join("node3");
    let cfg = NodeConfig::new(3, &node_dir, "127.0.0.1:23790")
        .timing(10, 1, 3)
        .maximum_lag_on_failover(4096)
        .parameter("max_connections", "50")
        .tag("nofailover", "true");
    let path = node_dir.join("rampart.yml");
    cfg.write(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), agent_uid());
    let sock = std::fs::metadata(&cfg.socket_dir).expect("socket dir created");
    assert!(sock.is_dir());
    assert_eq!(sock.uid(), agent_uid());
    assert!(!cfg.data_dir.exists(), "the data dir is for initdb to create");

    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_json::Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("not valid YAML: {e}\n{text}"));
    let at = |ptr: &str| doc.pointer(ptr).cloned().unwrap_or_else(|| panic!("missing {ptr} in\n{text}"));

    assert_eq!(at("/scope"), "postgres");
    assert_eq!(at("/namespace"), "/db/");
    assert_eq!(at("/name"), "node3");
    assert_eq!(at("/restapi/listen"), format!("127.0.0.1:{}", cfg.api_port).as_str());
    assert_eq!(at("/restapi/connect_address"), cfg.api_address().as_str());
    assert_eq!(at("/etcd3/host"), "127.0.0.1:23790");
    assert_eq!(at("/bootstrap/dcs/ttl"), 10);
    assert_eq!(at("/bootstrap/dcs/loop_wait"), 1);
    assert_eq!(at("/bootstrap/dcs/retry_timeout"), 3);
    assert_eq!(at("/bootstrap/dcs/maximum_lag_on_failover"), 4096);
    assert_eq!(at("/bootstrap/dcs/postgresql/use_pg_rewind"), true);
    assert_eq!(
        at("/bootstrap/initdb"),
        serde_json::json!([{"auth-local": "trust"}, {"auth-host": "scram-sha-256"}, {"encoding": "UTF8"}, "data-checksums"])
    );
    let hba = at("/bootstrap/pg_hba");
    for rule in ["host replication replicator 127.0.0.1/32 scram-sha-256", "host all all 127.0.0.1/32 scram-sha-256"] {
        assert!(hba.as_array().unwrap().iter().any(|r| r == rule), "pg_hba lacks {rule:?}: {hba}");
    }
    assert_eq!(at("/postgresql/listen"), cfg.pg_address().as_str());
    assert_eq!(at("/postgresql/connect_address"), format!("127.0.0.1:{}", cfg.pg_port).as_str());
    assert_eq!(at("/postgresql/data_dir"), node_dir.join("data").to_str().unwrap());
    assert_eq!(at("/postgresql/pgpass"), node_dir.join("pgpass").to_str().unwrap());
    assert_eq!(at("/postgresql/bin_dir"), support::pg_bin_dir().to_str().unwrap());
    assert_eq!(at("/postgresql/authentication/replication/username"), "replicator");
    assert_eq!(at("/postgresql/authentication/replication/password"), "rep-pass");
    assert_eq!(at("/postgresql/authentication/superuser/username"), "postgres");
    assert_eq!(at("/postgresql/authentication/superuser/password"), "secretpassword");
    assert_eq!(at("/postgresql/parameters/unix_socket_directories"), node_dir.join("sock").to_str().unwrap());
    assert_eq!(at("/postgresql/parameters/max_connections"), 50);
    assert_eq!(at("/tags/nofailover"), true);
    assert_eq!(at("/tags/noloadbalance"), false);
    assert_ne!(cfg.api_port, cfg.pg_port);
    assert_eq!(cfg.dcs_prefix(), "/db/postgres/");
    assert_eq!(support::agent::data_dir_from_config(&path).as_deref(), Some(node_dir.join("data").as_path()));
}

/// A stand-in for `rampart agent`: initdb, then a postmaster in its own session (as the agent
/// runs PostgreSQL in its own process group), then a child process, then wait.
fn write_fake_agent(path: &Path, cfg: &NodeConfig) {
    let bin = support::pg_bin_dir();
    let script = format!(
        r#"#!/bin/sh
set -e
echo "fake agent: $1 $2 as $(id -un), RUST_LOG=$RUST_LOG, HOME=$HOME"
"{bin}/initdb" -D "{data}" -A trust -U postgres --no-sync >/dev/null
setsid "{bin}/postgres" -D "{data}" -k "{sock}" -p {port} -c listen_addresses=127.0.0.1 -c fsync=off \
    >"{node}/postgres.log" 2>&1 </dev/null &
sleep 600 &
echo $! >"{node}/child.pid"
wait
"#,
        bin = bin.display(),
        data = cfg.data_dir.display(),
        sock = cfg.socket_dir.display(),
        port = cfg.pg_port,
        node = cfg.node_dir.display(),
    );
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    support::process::chown_to_agent_user(path).unwrap();
}

#[test]
fn agent_handle_runs_as_the_agent_user_and_kills_what_it_started() {
    let dir = TestDir::new("smoke-agent");
    let node_dir = dir.subdir("node0");
    let cfg = NodeConfig::new(0, &node_dir, "127.0.0.1:1");
    let config = node_dir.join("rampart.yml");
    cfg.write(&config).unwrap();
    let fake = dir.join("fake-rampart");
    write_fake_agent(&fake, &cfg);
    let log = node_dir.join("agent.log");

    let mut agent = Agent::start(&fake, &config, &log);
    assert_eq!(agent.data_dir(), Some(cfg.data_dir.as_path()));
    assert!(agent.is_running());
    assert_eq!(uid_of_process(agent.pid()), agent_uid(), "agent does not run as {}", run_as().user);

    let up = support::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        agent.postmaster_running() && node_dir.join("child.pid").exists()
    });
    assert!(up, "fake agent did not start PostgreSQL; log:\n{}", support::tail_file(&log, 40));
    let postmaster = agent.postmaster_pid().unwrap();
    assert_eq!(uid_of_process(postmaster), agent_uid());
    let child: u32 = std::fs::read_to_string(node_dir.join("child.pid")).unwrap().trim().parse().unwrap();
    assert!(is_alive(child));

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("=== harness: starting"), "{log_text}");
    assert!(log_text.contains(&format!("fake agent: agent {} as {}", config.display(), run_as().user)), "{log_text}");
    assert!(log_text.contains("RUST_LOG=info"), "{log_text}");
    assert!(log_text.contains(&format!("HOME={}", run_as().home.display())), "{log_text}");
    assert!(support::process::pid_file_for(&log).is_file());

    // Killing the agent alone leaves PostgreSQL running, as a real agent crash would.
    let agent_pid = agent.pid();
    agent.sigkill();
    assert!(!is_alive(agent_pid));
    assert!(agent.wait_exit(Duration::from_secs(1)).is_some());
    assert!(is_alive(postmaster), "postmaster died with the agent");

    // A replacement agent adopts it; the old handle must then leave it alone.
    agent.disown_postmaster();
    drop(agent);
    assert!(is_alive(postmaster), "a disowned handle stopped the postmaster");
    let sleeper_script = dir.join("fake-sleeper");
    std::fs::write(&sleeper_script, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&sleeper_script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start(&sleeper_script, &config, &log);
    assert_eq!(agent.postmaster_pid(), Some(postmaster));
    let sleeper = agent.pid();
    assert!(support::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        support::process::exe_name(sleeper).as_deref() == Some("sleep")
    }));

    drop(agent);
    assert!(!is_alive(sleeper), "agent {sleeper} survived drop");
    assert!(!is_alive(postmaster), "postmaster {postmaster} survived drop");
    // The first agent's child was orphaned by sigkill(): not ours to track any more, clean it up.
    support::process::signal(child, nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn agent_drop_kills_the_agent_and_its_children() {
    let dir = TestDir::new("smoke-agent-tree");
    let node_dir = dir.subdir("node0");
    let cfg = NodeConfig::new(0, &node_dir, "127.0.0.1:1");
    let config = node_dir.join("rampart.yml");
    cfg.write(&config).unwrap();
    let fake = dir.join("fake-rampart");
    write_fake_agent(&fake, &cfg);
    let log = node_dir.join("agent.log");

    let agent = Agent::start(&fake, &config, &log);
    let agent_pid = agent.pid();
    let up = support::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        agent.postmaster_running() && node_dir.join("child.pid").exists()
    });
    assert!(up, "fake agent did not start PostgreSQL; log:\n{}", support::tail_file(&log, 40));
    let postmaster = agent.postmaster_pid().unwrap();
    let child: u32 = std::fs::read_to_string(node_dir.join("child.pid")).unwrap().trim().parse().unwrap();

    drop(agent);
    for (what, pid) in [("agent", agent_pid), ("agent's child", child), ("postmaster", postmaster)] {
        assert!(!is_alive(pid), "{what} {pid} survived drop");
    }
}

#[test]
fn agent_binary_out_of_the_agent_users_reach_is_staged() {
    // As root, a binary under a root-only directory (say a checkout under /root) cannot be run by
    // the postgres user; the harness then runs a hard link or copy of it instead.
    let dir = TestDir::new("smoke-stage");
    let private = dir.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let script = private.join("fake-sleeper");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node_dir = dir.subdir("node0");
    let config = node_dir.join("rampart.yml");
    NodeConfig::new(0, &node_dir, "127.0.0.1:1").write(&config).unwrap();

    let expect_staging = run_as().switch_to.is_some();
    assert_eq!(support::process::agent_user_can_execute(&script), !expect_staging);
    let mut agent = Agent::start(&script, &config, &node_dir.join("agent.log"));
    let pid = agent.pid();
    assert!(
        support::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            support::process::exe_name(pid).as_deref() == Some("sleep")
        }),
        "agent did not run: {:?}",
        agent.try_exit_status()
    );
    assert_eq!(node_dir.join(".harness-bin/fake-sleeper").exists(), expect_staging);
    drop(agent);
    assert!(!is_alive(pid));
}

#[test]
fn cluster_fixture_without_agents_writes_configs_and_reads_the_leader_key() {
    let options = support::ClusterOptions { start_agents: false, ..Default::default() }.tweak(|i, cfg| {
        if i == 1 {
            cfg.tag("nofailover", "true")
        } else {
            cfg
        }
    });
    let cluster = support::Cluster::start(2, options);
    assert_eq!(cluster.len(), 2);
    assert!(cluster.etcd().is_healthy());
    assert_ne!(cluster.pg_port(0), cluster.pg_port(1));
    assert_ne!(cluster.api_port(0), cluster.api_port(1));
    for i in 0..2 {
        let text = std::fs::read_to_string(cluster.config_path(i)).unwrap();
        assert!(text.contains(&format!("name: 'node{i}'")), "{text}");
        assert!(text.contains(&format!("host: {}", cluster.etcd().host())), "{text}");
        assert!(text.contains("ttl: 10") && text.contains("loop_wait: 1") && text.contains("retry_timeout: 3"));
        assert_eq!(text.contains("nofailover: true"), i == 1, "{text}");
        assert!(cluster.data_dir(i).starts_with(cluster.dir()));
        assert!(cluster.node(i).agent.is_none());
    }
    assert_eq!(cluster.dcs_prefix(), "/db/postgres/");
    assert_eq!(cluster.leader_name(), None);
    assert_eq!(cluster.dcs().leader(), None);
    cluster.etcd().put("/db/postgres/leader", "node1");
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(5)), Some(1));
    // The benches' reader (through rampart_dcs) agrees with etcdctl.
    assert_eq!(cluster.dcs().leader().as_deref(), Some("node1"));
    assert!(cluster.nodes_answering("/primary", 200).is_empty());
    cluster.dump_logs();
}
