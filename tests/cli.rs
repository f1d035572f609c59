//! Stories of an operator using `rampart`'s patronictl verbs on a running cluster, checked
//! against what etcd holds and against Patroni's own `patronictl`:
//! * reading the cluster: `list` in every format (with the Pending restart and Tags columns),
//!   `topology`, `show-config`, `dsn`, `version`, also through `--dcs` without a file;
//! * changing the configuration with `edit-config -s/-p --force`, and the refusals of
//!   interactive verbs run without a terminal or with an impossible configuration;
//! * `pause` and `resume` while every agent is frozen, so that no REST API answers and the
//!   command writes the DCS itself, then waits until the agents report the new state;
//! * `history` after a crash failover, and `remove` with its typed confirmations on stdin.
//!
//! Switchover, failover, restart, reinit and reload need the agents' write side and are tested
//! with it (their request building and prompts are unit-tested in `src/cli`).

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;

/// `rampart <verb> -c <node 0's config> <rest>`.
fn ctl(c: &Cluster, args: &[&str]) -> Output {
    let (verb, rest) = args.split_first().expect("a verb");
    let mut all = vec![verb.to_string(), "-c".into(), c.config_path(0).display().to_string()];
    all.extend(rest.iter().map(|s| s.to_string()));
    c.rampart(&all)
}

/// [`ctl`] with `input` on stdin (a pipe, not a terminal).
fn ctl_with_stdin(c: &Cluster, args: &[&str], input: &str) -> Output {
    let (verb, rest) = args.split_first().expect("a verb");
    let mut child = Command::new(support::rampart_bin())
        .arg(verb)
        .arg("-c")
        .arg(c.config_path(0))
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning rampart");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing stdin");
    child.wait_with_output().expect("waiting for rampart")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with both streams unless the command succeeded; returns stdout.
fn ok(what: &str, o: Output) -> String {
    assert!(o.status.success(), "{what} failed ({}):\n{}\n{}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
}

/// The JSON value of a DCS key of the cluster.
fn key(c: &Cluster, name: &str) -> Option<Value> {
    c.etcd().get(&format!("{}{name}", c.dcs_prefix())).map(|v| serde_json::from_str(&v).expect("JSON in etcd"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reads_and_configures_the_cluster_like_with_patronictl() {
    let started = Instant::now();
    let c = Cluster::start(
        3,
        ClusterOptions { stagger: Duration::from_secs(2), ..Default::default() }.tweak(|i, cfg| match i {
            1 => cfg.tag("zone", "a"),
            2 => cfg.tag("replicatefrom", "node1"),
            _ => cfg,
        }),
    );
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    println!("cluster healthy after {:?}", started.elapsed());
    let t = Instant::now();

    // list -f json: one object per member, the Tags column because two members have tags.
    let rows: Value = serde_json::from_str(&ok("list -f json", ctl(&c, &["list", "-f", "json"]))).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!((row["Cluster"].as_str(), row["Member"].as_str()), (Some("postgres"), Some(c.name(i))), "{row}");
        assert_eq!(row["Host"], format!("127.0.0.1:{}", c.pg_port(i)));
        assert_eq!(row["TL"], 1);
        assert_eq!(row["Role"], if i == leader { "Leader" } else { "Replica" });
    }
    assert!(rows[0].get("Tags").is_none(), "default tags are not shown: {}", rows[0]);
    assert_eq!(rows[1]["Tags"], serde_json::json!({"zone": "a"}));
    assert_eq!(rows[2]["Tags"], serde_json::json!({"replicatefrom": "node1"}));

    // yaml and tsv carry the same rows.
    let y = yaml(&ok("list -f yaml", ctl(&c, &["list", "-f", "yaml"])));
    assert_eq!(y.as_array().map(Vec::len), Some(3), "{y}");
    assert_eq!(y[1]["Tags"]["zone"], "a");
    let tsv = ok("list -f tsv", ctl(&c, &["list", "-f", "tsv"]));
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(
        lines[0], "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tTags",
        "{tsv}"
    );
    assert!(lines[2].starts_with("postgres\tnode1\t") && lines[2].ends_with("\t{zone: a}"), "{tsv}");

    // The pretty table: title with the system identifier, multi-line tag cells.
    let sysid = c.etcd().get(&format!("{}initialize", c.dcs_prefix())).expect("initialize key");
    let pretty = ok("list", ctl(&c, &["list"]));
    assert!(pretty.starts_with(&format!("+ Cluster: postgres ({sysid}) -")), "{pretty}");
    assert!(pretty.contains("| Tags ") && pretty.contains("| zone: a "), "{pretty}");

    // The same through --dcs and --scope, without a configuration file.
    let url = format!("etcd3://{}/db", c.etcd().host());
    let o = c.rampart(["list", "--dcs", &url, "--scope", "postgres", "-f", "json"]);
    let via_url: Value = serde_json::from_str(&ok("list --dcs", o)).unwrap();
    assert_eq!(via_url.as_array().map(Vec::len), Some(3));

    // topology: the leader first; node2 under node1 when node1 is a replica, else under the leader.
    let topo = ok("topology", ctl(&c, &["topology"]));
    let names: Vec<String> = topo
        .lines()
        .skip(3)
        .filter(|l| l.starts_with("| "))
        .map(|l| l[2..].split(" | ").next().unwrap().trim_end().to_string())
        .collect();
    assert_eq!(names[0], c.name(leader), "{topo}");
    let cascaded = if leader == 0 { "  + node2" } else { "+ node2" };
    assert!(leader == 2 || names.iter().any(|n| n == cascaded), "{topo}");
    assert_eq!(names.len(), 3, "{topo}");

    // show-config reads back exactly what patronictl shows.
    let ours = yaml(&ok("show-config", ctl(&c, &["show-config"])));
    assert_eq!(ours["ttl"], 10);
    assert_eq!(ours["loop_wait"], 1);
    let theirs = yaml(&ok("patronictl show-config", c.patronictl(&["show-config"])));
    assert_eq!(ours, theirs);

    // An impossible configuration is refused, and nothing is asked without a terminal.
    let before = key(&c, "config").expect("config key");
    let o = ctl(&c, &["edit-config", "-s", "ttl=4", "--force"]);
    assert!(!o.status.success() && stderr(&o).contains("ttl: 4 is below the minimum"), "{}", stderr(&o));
    let o = ctl(&c, &["edit-config", "-s", "ttl=12"]);
    assert!(!o.status.success() && stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(key(&c, "config").as_ref(), Some(&before), "refusals write nothing");

    // edit-config -s/-p --force: the DCS key changes and patronictl sees the change.
    let out = ok(
        "edit-config",
        ctl(
            &c,
            &["edit-config", "-s", "ttl=12", "-s", "postgresql.use_slots=true", "-p", "max_connections=150", "--force"],
        ),
    );
    assert!(out.contains("-ttl: 10\n+ttl: 12\n") && out.ends_with("Configuration changed\n"), "{out}");
    let after = key(&c, "config").expect("config key");
    assert_eq!(after["ttl"], 12);
    assert_eq!(after["postgresql"]["parameters"]["max_connections"], 150);
    let theirs = yaml(&ok("patronictl show-config", c.patronictl(&["show-config"])));
    assert_eq!(theirs["ttl"], 12);
    assert_eq!(theirs["postgresql"]["parameters"]["max_connections"], 150);
    assert_eq!(yaml(&ok("show-config", ctl(&c, &["show-config"]))), theirs);
    let o = ok("edit-config again", ctl(&c, &["edit-config", "-s", "ttl=12", "--force"]));
    assert_eq!(o, "Not changed\n");

    // max_connections needs a restart: the agents report it and list grows its column.
    let pending = support::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        let o = ctl(&c, &["list", "-f", "json"]);
        let rows: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        rows.as_array().is_some_and(|r| r.iter().all(|m| m["Pending restart"] == "*"))
    });
    assert!(pending, "no pending restart shown:\n{}", stdout(&ctl(&c, &["list"])));
    let pretty = ok("list", ctl(&c, &["list"]));
    assert!(pretty.contains("| Pending restart |"), "{pretty}");
    let theirs = ok("patronictl list", c.patronictl(&["list"]));
    assert_eq!(theirs.matches("| *").count(), 3, "patronictl sees the same pending restarts:\n{theirs}");

    // dsn: the leader by default, a named member, a role.
    assert_eq!(ok("dsn", ctl(&c, &["dsn"])), format!("host=127.0.0.1 port={}\n", c.pg_port(leader)));
    assert_eq!(ok("dsn -m node2", ctl(&c, &["dsn", "-m", "node2"])), format!("host=127.0.0.1 port={}\n", c.pg_port(2)));
    let replica = ok("dsn --role replica", ctl(&c, &["dsn", "--role", "replica"]));
    assert!((0..3).any(|i| i != leader && replica == format!("host=127.0.0.1 port={}\n", c.pg_port(i))), "{replica}");
    let o = ctl(&c, &["dsn", "-m", "node9"]);
    assert!(!o.status.success() && stderr(&o).contains("node9 is not a member of cluster postgres"), "{}", stderr(&o));

    // version: ours, then every member's from its REST API.
    let v = ok("version", ctl(&c, &["version"]));
    let version = env!("CARGO_PKG_VERSION");
    assert!(v.starts_with(&format!("rampart {version}\n\n")), "{v}");
    for i in 0..3 {
        let line = v.lines().find(|l| l.starts_with(&format!("{}: ", c.name(i)))).unwrap_or_else(|| panic!("{v}"));
        assert!(line.contains(&format!("Rampart {version}")) && line.contains("PostgreSQL 15."), "{line}");
    }

    // Verbs that act refuse to guess without a terminal, and change nothing.
    let other = (0..3).find(|&i| i != leader).unwrap();
    let o = ctl(&c, &["switchover", "--leader", c.name(leader), "--candidate", c.name(other), "--scheduled", "now"]);
    assert!(!o.status.success() && stderr(&o).contains("re-run with --force"), "{}", stderr(&o));
    let o = ctl(&c, &["switchover", "--candidate", "node9", "--force"]);
    assert!(
        stderr(&o).contains("candidate node9 is not a member of cluster postgres (members: node0, node1, node2)"),
        "{}",
        stderr(&o)
    );
    let o = ctl(&c, &["restart", c.name(other)]);
    assert!(!o.status.success() && stderr(&o).contains("--scheduled was not given"), "{}", stderr(&o));
    let o = ctl(&c, &["reinit", c.name(leader), "--force"]);
    assert!(stderr(&o).contains("only replicas can be reinitialized"), "{}", stderr(&o));
    assert_eq!(c.leader_index(), Some(leader));
    println!("cli checks took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_reach_the_agents_through_the_dcs_when_no_api_answers() {
    // A long ttl: the agents are frozen for two REST timeouts, which must not cost the leader
    // its lease.
    let c = Cluster::start(2, ClusterOptions { ttl: 30, loop_wait: 1, retry_timeout: 3, ..Default::default() });
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");

    for (verb, paused) in [("pause", true), ("resume", false)] {
        let t = Instant::now();
        // Freeze every agent: their REST APIs accept connections but never answer.
        for i in 0..2 {
            support::process::signal(c.agent(i).pid(), Signal::SIGSTOP);
        }
        let cli = Command::new(support::rampart_bin())
            .args([verb, "-c"])
            .arg(c.config_path(0))
            .arg("--wait")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning rampart");
        // Once the command gave up on the APIs it writes the config key itself.
        let written = support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            key(&c, "config").is_some_and(|cfg| cfg.get("pause").and_then(Value::as_bool).unwrap_or(false) == paused)
        });
        for i in 0..2 {
            support::process::signal(c.agent(i).pid(), Signal::SIGCONT);
        }
        let out = cli.wait_with_output().expect("rampart");
        assert!(written, "{verb}: config key not written:\n{}\n{}", stdout(&out), stderr(&out));
        let text = ok(verb, out.clone());
        assert!(stderr(&out).contains("writing the config key in the DCS"), "{}", stderr(&out));
        let done = if paused { "paused" } else { "resumed" };
        assert!(text.ends_with(&format!("Success: cluster management is {done}\n")), "{text}");
        println!("{verb} through the DCS took {:?}", t.elapsed());

        // Every member key shows the state (that is what --wait waited for), and patronictl agrees.
        for i in 0..2 {
            let m = key(&c, &format!("members/{}", c.name(i))).expect("member key");
            assert_eq!(m.get("pause").and_then(Value::as_bool).unwrap_or(false), paused, "{m}");
        }
        let theirs = ok("patronictl list", c.patronictl(&["list"]));
        assert_eq!(theirs.contains("Maintenance mode: on"), paused, "{theirs}");
        let ours = ok("list", ctl(&c, &["list"]));
        assert_eq!(ours.contains("\n Maintenance mode: on\n"), paused, "{ours}");
        // Asking again for the state the cluster is in is refused.
        let o = ctl(&c, &[verb]);
        assert!(!o.status.success() && stderr(&o).contains(if paused { "already paused" } else { "not paused" }));
    }
    assert_eq!(c.leader_index(), Some(leader), "the freeze did not cost the leader its lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_a_crash_failover_and_remove_wipes_the_cluster_after_typed_confirmation() {
    let mut c = Cluster::start(2, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let empty = ok("history", ctl(&c, &["history"]));
    assert_eq!(empty.lines().count(), 4, "only the header and PrettyTable's closing rule:\n{empty}");

    c.kill_agent(old);
    c.kill_postgres(old);
    let new = 1 - old;
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(200), || c.leader_index() == Some(new)),
        "no failover"
    );
    assert!(
        support::wait_until(Duration::from_secs(20), Duration::from_millis(200), || key(&c, "history").is_some()),
        "no history key"
    );
    let rows: Value = serde_json::from_str(&ok("history -f json", ctl(&c, &["history", "-f", "json"]))).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["TL"], 1);
    assert!(rows[0]["LSN"].as_u64().is_some_and(|l| l > 0), "{rows}");
    let theirs: Value =
        serde_json::from_str(&ok("patronictl history", c.patronictl(&["history", "-f", "json"]))).unwrap();
    assert_eq!(rows, theirs, "patronictl reads the same history");
    let pretty = ok("history", ctl(&c, &["history"]));
    assert!(pretty.lines().nth(1).unwrap().starts_with("| TL |"), "{pretty}");
    assert_eq!(pretty.lines().count(), 5, "{pretty}");

    // remove: the agents are stopped first (they would recreate their keys).
    c.kill_agent(new);
    c.kill_postgres(new);
    let prefix = c.dcs_prefix();
    assert!(!c.etcd().keys(&prefix).is_empty());
    let leader_line = c.leader_name().unwrap_or_default();
    let o = ctl_with_stdin(&c, &["remove", "postgres"], "postgres\nyes\n");
    assert!(!o.status.success() && stderr(&o).contains("did not type \"Yes I am aware\" exactly"), "{}", stderr(&o));
    let o = ctl_with_stdin(&c, &["remove", "postgres"], "other\n");
    assert!(!o.status.success() && stderr(&o).contains("cluster names do not match"), "{}", stderr(&o));
    assert!(!c.etcd().keys(&prefix).is_empty(), "wrong answers remove nothing");
    let o = ctl_with_stdin(&c, &["remove", "postgres"], &format!("postgres\nYes I am aware\n{leader_line}\n"));
    let out = ok("remove", o.clone());
    assert!(stderr(&o).contains("Type \"Yes I am aware\""), "{}", stderr(&o));
    assert!(out.ends_with(&format!("Removed every key under {prefix}\n")), "{out}");
    assert_eq!(c.etcd().keys(&prefix), Vec::<String>::new());
    let o = ctl_with_stdin(&c, &["remove", "postgres"], "postgres\n");
    assert!(!o.status.success() && stderr(&o).contains("nothing to remove"), "{}", stderr(&o));
}
