//! Story: an operator runs the agent under systemd as they ran Patroni. `systemctl reload`
//! (SIGHUP) applies an edited file without restarting anything: a new `work_mem` and a new REST
//! password take effect, the agent and its PostgreSQL keep their PIDs; a file that became
//! invalid is refused with a log line and the agent carries on. `systemctl stop` (SIGTERM) ends
//! the agent and its PostgreSQL well before systemd's 90 s stop timeout, even while etcd is down.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::client::http_request_authorized;
use support::cluster::{Cluster, ClusterOptions};

const REST_PASSWORD: &str = "sighup-secret-3141";

async fn show(port: u16, setting: &str) -> Option<String> {
    let client = support::connect_superuser(port).await.ok()?;
    let row = client.query_one(&format!("SHOW {setting}"), &[]).await.ok()?;
    Some(row.get(0))
}

/// Writes `cfg` as node `i`'s file, sends its agent SIGHUP and waits until PostgreSQL shows
/// `work_mem` = `work_mem`.
async fn reload_with(c: &Cluster, i: usize, cfg: &support::NodeConfig, work_mem: &str) {
    cfg.write(c.config_path(i)).unwrap();
    assert!(support::process::signal(c.agent(i).pid(), Signal::SIGHUP));
    let reloaded = support::wait_until_async(Duration::from_secs(30), Duration::from_millis(200), || async {
        show(c.pg_port(i), "work_mem").await.as_deref() == Some(work_mem)
    })
    .await;
    assert!(reloaded, "work_mem {work_mem} reloaded; agent log:\n{}", support::tail_file(c.log_path(i), 30));
}

fn log_of(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(c.log_path(i)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_keeps_everything_running() {
    let c = Cluster::start(1, ClusterOptions::default());
    let n = c.wait_for_single_primary(Duration::from_secs(90)).await.expect("a primary");
    let (api, pg) = (c.api_port(n), c.pg_port(n));
    let agent_pid = c.agent(n).pid();
    let postmaster_pid = c.agent(n).postmaster_pid().expect("postmaster pid");
    assert_eq!(show(pg, "work_mem").await.as_deref(), Some("4MB"), "PostgreSQL's default to begin with");
    assert_eq!(support::http_status(api, "POST", "/reload"), 202, "no authentication configured yet");

    // The operator edits the member's file and reloads the agent as systemd would.
    let edited = c
        .node(n)
        .config
        .clone()
        .parameter("work_mem", "12MB")
        .restapi_setting("authentication", &format!("{{username: admin, password: '{REST_PASSWORD}'}}"));
    reload_with(&c, n, &edited, "12MB").await;
    assert_eq!(support::http_status(api, "POST", "/reload"), 401, "writes now need the new password");
    let wrong = rampart_api::BasicAuth::new("admin", "old-guess").header_value();
    assert_eq!(http_request_authorized(api, "POST", "/restart", None, &wrong).unwrap().status, 401);
    let right = rampart_api::BasicAuth::new("admin", REST_PASSWORD).header_value();
    assert_eq!(http_request_authorized(api, "POST", "/reload", None, &right).unwrap().status, 202);
    assert!(log_of(&c, n).contains("configuration reloaded (SIGHUP)"));

    // Nothing restarted: the same agent, the same postmaster.
    assert!(support::process::is_alive(agent_pid), "the agent survived SIGHUP");
    assert_eq!(c.agent(n).postmaster_pid(), Some(postmaster_pid), "PostgreSQL was not restarted");

    // A file that became invalid is refused; the agent keeps running on what it had.
    let broken = edited.clone().parameter("shared_buffers", "[oops");
    broken.write(c.config_path(n)).unwrap();
    assert!(support::process::signal(agent_pid, Signal::SIGHUP));
    let refused = support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        log_of(&c, n).contains("reload (SIGHUP) refused")
    });
    let log = log_of(&c, n);
    let line = log.lines().find(|l| l.contains("reload (SIGHUP) refused")).unwrap_or_default();
    assert!(refused, "an error line for the bad file; agent log:\n{}", support::tail_file(c.log_path(n), 30));
    assert!(
        line.contains("rampart.yml") && line.contains("invalid YAML"),
        "the line names the file and the problem: {line}"
    );
    let answer = http_request_authorized(api, "POST", "/reload", None, &right).unwrap();
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(support::process::is_alive(agent_pid), "the agent survived the bad file");
    assert_eq!(show(pg, "work_mem").await.as_deref(), Some("12MB"), "the configuration in force stays");
    assert_eq!(support::http_status(api, "GET", "/primary"), 200);
    assert_eq!(c.agent(n).postmaster_pid(), Some(postmaster_pid));

    // Reload applies what it can: the new work_mem goes in, the missing certificate is refused
    // (the REST API keeps its settings), the scope waits for a restart.
    let mixed =
        edited.parameter("work_mem", "16MB").restapi_setting("certfile", "'/nonexistent/cert.pem'").scope("other");
    reload_with(&c, n, &mixed, "16MB").await;
    let log = log_of(&c, n);
    assert!(log.contains("scope changed: needs a restart of the agent"), "{}", support::tail_file(c.log_path(n), 30));
    let refused = log.lines().find(|l| l.contains("the REST API keeps its previous")).unwrap_or_default();
    assert!(refused.contains("restapi.certfile") && refused.contains("/nonexistent/cert.pem"), "{refused}");
    assert_eq!(
        http_request_authorized(api, "POST", "/reload", None, &right).unwrap().status,
        202,
        "plain HTTP, same password"
    );
    assert_eq!(c.leader_name().as_deref(), Some(c.name(n)), "still the leader of the same cluster");
    assert_eq!(c.agent(n).postmaster_pid(), Some(postmaster_pid));
    assert!(!log.contains(REST_PASSWORD), "the REST password never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_etcd_down_ends_the_agent_and_postgres_in_time() {
    // Patroni's default timings: every etcd call of a cycle may wait retry_timeout (10 s).
    let mut c = Cluster::start(1, ClusterOptions { ttl: 30, loop_wait: 10, retry_timeout: 10, ..Default::default() });
    let n = c.wait_for_single_primary(Duration::from_secs(90)).await.expect("a primary");
    // A settled leader: it holds the lock, which it must not release before PostgreSQL is down.
    assert_eq!(c.wait_for_leader(Duration::from_secs(60)), Some(n));
    assert!(support::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        support::http_status(c.api_port(n), "GET", "/primary") == 200
    }));
    let postmaster_pid = c.agent(n).postmaster_pid().expect("postmaster pid");

    c.etcd_mut().stop();
    // Give the agent time to run into etcd's absence: its watch breaks and the cycle it starts
    // waits for etcd.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = Instant::now();
    c.agent(n).sigterm();
    let exited = c.agent_mut(n).wait_exit(Duration::from_secs(120));
    let took = sent.elapsed();
    println!("agent exit after SIGTERM with etcd stopped: {:.1} s", took.as_secs_f64());
    assert!(exited.is_some(), "the agent exited; log:\n{}", support::tail_file(c.log_path(n), 40));
    assert!(!support::process::is_alive(postmaster_pid), "PostgreSQL was stopped with the agent");
    // The bound: well under systemd's 90 s stop timeout.
    assert!(took < Duration::from_secs(30), "took {took:?}; log:\n{}", support::tail_file(c.log_path(n), 40));
    let log = log_of(&c, n);
    assert!(log.contains("SIGTERM received: shutting down"), "the signal is logged when it arrives");
    assert!(log.contains("agent stopped"));
}
