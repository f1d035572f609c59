//! Stories of an operator acting on a three-node cluster with `rampart`'s action verbs, checked
//! the way an operator checks: the command's exit status and what it prints, then `rampart list
//! -f json` (roles, timelines, states, pending restarts), `rampart history -f json`, SQL and the
//! DCS.
//! * leadership moves on request: `switchover` to a named candidate, to any replica, at a
//!   scheduled time (announced under `rampart list`), and a scheduled one withdrawn with
//!   `flush switchover` that never happens;
//! * maintenance mode keeps a dead leader's place empty until `resume`; later `failover
//!   --candidate` names who replaces the next dead leader;
//! * on a cluster whose REST API wants Basic auth (the credentials in `ctl`): a parameter that
//!   needs a restart, restarted on one member and then `--pending` on the rest; `reload`;
//!   `reinit --wait` of a replica whose data directory lost its control file; and the 401 a
//!   command without the credentials gets.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use support::cluster::{Cluster, ClusterOptions};
use support::ctl::{ctl, expect_ok, list_rows, pending_restart, row, stderr, stdout};
use support::health::{is_streaming_replica, wait_healthy};

/// Polls `rampart list -f json` until `done` holds for its rows and returns them; panics with
/// `what` and the rows last seen otherwise.
fn wait_list(config: &Path, timeout: Duration, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    let reached = support::wait_until(timeout, Duration::from_millis(500), || {
        last = list_rows(config).unwrap_or_default();
        done(&last)
    });
    assert!(reached, "{what}; `rampart list -f json` shows:\n{}", serde_json::to_string_pretty(&last).unwrap());
    last
}

/// `name` is the running Leader on timeline `tl`.
fn leads(rows: &[Value], name: &str, tl: u64) -> bool {
    row(rows, name).is_some_and(|r| r["Role"] == "Leader" && r["State"] == "running" && r["TL"] == tl)
}

/// `name` is a Replica streaming on timeline `tl`.
fn streams(rows: &[Value], name: &str, tl: u64) -> bool {
    row(rows, name).is_some_and(|r| r["Role"] == "Replica" && r["State"] == "streaming" && r["TL"] == tl)
}

/// Exactly the three members, `leader` leading on `tl` and the two others streaming on it.
fn led_by(c: &Cluster, rows: &[Value], leader: usize, tl: u64) -> bool {
    rows.len() == 3
        && leads(rows, c.name(leader), tl)
        && (0..3).filter(|&i| i != leader).all(|i| streams(rows, c.name(i), tl))
}

/// The members `rampart list` shows as Leader.
fn leaders(rows: &[Value]) -> Vec<&Value> {
    rows.iter().filter(|r| r["Role"] == "Leader").collect()
}

/// `--scheduled` text for `secs` seconds from now, and the instant it names (whole seconds).
fn in_seconds(secs: i64) -> (String, Timestamp) {
    let at = Timestamp::from_second((Timestamp::now() + SignedDuration::from_secs(secs)).as_second()).unwrap();
    (at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), at)
}

/// The `Switchover scheduled at` footer of the pretty `rampart list`: (time, from, to).
fn scheduled_footer(pretty: &str) -> Option<(Timestamp, String, String)> {
    let mut lines = pretty.lines().skip_while(|l| !l.starts_with(" Switchover scheduled at: "));
    let at = lines.next()?.trim_start().strip_prefix("Switchover scheduled at: ")?.parse().ok()?;
    let mut from = String::new();
    let mut to = String::new();
    for l in lines {
        match l.trim().split_once(": ") {
            Some(("from", v)) => from = v.to_string(),
            Some(("to", v)) => to = v.to_string(),
            _ => break,
        }
    }
    Some((at, from, to))
}

/// `rampart history -f json`, once it has `n` rows.
fn wait_history(config: &Path, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    let reached = support::wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
        let o = ctl(config, &["history", "-f", "json"]);
        last = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        last.as_array().is_some_and(|rows| rows.len() == n)
    });
    assert!(reached, "`rampart history -f json` does not have {n} rows: {last}");
    last.as_array().cloned().unwrap_or_default()
}

async fn show(port: u16, setting: &str) -> String {
    let db = support::connect_superuser(port).await.unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    db.query_one(&format!("SHOW {setting}"), &[]).await.unwrap_or_else(|e| panic!("SHOW {setting}: {e}")).get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_hands_over_now_or_at_its_time_unless_flushed() {
    let started = Instant::now();
    let c = Cluster::start(3, ClusterOptions::default());
    let first = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    println!("cluster healthy after {:?}", started.elapsed());
    let cfg = c.config_path(0).to_path_buf();

    // To a named candidate: the command returns once the candidate leads, and says so.
    let cand = (0..3).find(|&i| i != first).unwrap();
    let t = Instant::now();
    let o = ctl(&cfg, &["switchover", "--candidate", c.name(cand), "--force"]);
    let out = expect_ok("switchover --candidate", &o);
    println!("switchover to {} returned after {:?}", c.name(cand), t.elapsed());
    assert!(out.contains(&format!("Successfully switched over to \"{}\"", c.name(cand))), "{out}");
    assert_eq!(c.leader_name().as_deref(), Some(c.name(cand)), "the candidate holds the lock when the command returns");
    wait_list(&cfg, Duration::from_secs(60), "the candidate leads on timeline 2, the others stream", |rows| {
        led_by(&c, rows, cand, 2)
    });

    // Without a candidate the agents pick a healthy replica.
    let t = Instant::now();
    let out = expect_ok("switchover", &ctl(&cfg, &["switchover", "--force"]));
    println!("switchover to any replica returned after {:?}", t.elapsed());
    let second = c.leader_index().expect("a leader");
    assert_ne!(second, cand, "{out}");
    assert!(out.contains(&format!("Successfully switched over to \"{}\"", c.name(second))), "{out}");
    wait_list(&cfg, Duration::from_secs(60), "the new leader leads on timeline 3, the others stream", |rows| {
        led_by(&c, rows, second, 3)
    });

    // Scheduled: announced under `rampart list`, nothing happens before its time, then it does.
    let target = (0..3).find(|&i| i != second).unwrap();
    let (when, at) = in_seconds(8);
    let o = ctl(&cfg, &["switchover", "--candidate", c.name(target), "--scheduled", &when, "--force"]);
    let out = expect_ok("switchover --scheduled", &o);
    assert!(out.contains("Switchover scheduled"), "{out}");
    let pretty = expect_ok("list", &ctl(&cfg, &["list"]));
    assert_eq!(
        scheduled_footer(&pretty),
        Some((at, c.name(second).to_string(), c.name(target).to_string())),
        "the footer of `rampart list` shows when, from and to:\n{pretty}"
    );
    let mut fired_at = None;
    support::wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        if c.leader_index() == Some(target) {
            fired_at = Some(Timestamp::now());
        }
        fired_at.is_some()
    });
    let fired_at = fired_at.expect("the scheduled switchover happened");
    let late = fired_at.duration_since(at);
    println!("scheduled switchover seen {late:?} after its time");
    assert!(late >= SignedDuration::ZERO, "it happened {late:?} before its time");
    assert!(late < SignedDuration::from_secs(15), "it happened {late:?} after its time");
    let rows = wait_list(&cfg, Duration::from_secs(60), "the target leads on timeline 4, the others stream", |rows| {
        led_by(&c, rows, target, 4)
    });
    assert!(rows.iter().all(|r| (r["Receive Lag"] == 0 && r["Replay Lag"] == 0) || r["Role"] == "Leader"), "{rows:?}");
    let pretty = expect_ok("list", &ctl(&cfg, &["list"]));
    assert!(!pretty.contains("Switchover scheduled"), "done, no longer announced:\n{pretty}");

    // The history shows every handover, with who took over.
    let history = wait_history(&cfg, 3);
    let tls: Vec<&Value> = history.iter().map(|h| &h["TL"]).collect();
    assert_eq!(tls, [1, 2, 3], "{history:?}");
    let new_leaders: Vec<&Value> = history.iter().map(|h| &h["New Leader"]).collect();
    assert_eq!(new_leaders, [c.name(cand), c.name(second), c.name(target)], "{history:?}");
    let lsns: Vec<u64> = history.iter().map(|h| h["LSN"].as_u64().expect("LSN is a number")).collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{history:?}");

    // Scheduled and then flushed: the announcement goes away and the time passes quietly.
    let other = (0..3).find(|&i| i != target).unwrap();
    let (when, at) = in_seconds(6);
    let o = ctl(&cfg, &["switchover", "--candidate", c.name(other), "--scheduled", &when, "--force"]);
    expect_ok("switchover --scheduled", &o);
    let pretty = expect_ok("list", &ctl(&cfg, &["list"]));
    assert!(scheduled_footer(&pretty).is_some(), "{pretty}");
    let out = expect_ok("flush switchover", &ctl(&cfg, &["flush", "switchover", "--force"]));
    assert!(out.contains("Success: scheduled switchover deleted"), "{out}");
    let pretty = expect_ok("list", &ctl(&cfg, &["list"]));
    assert!(!pretty.contains("Switchover scheduled"), "flushed, no longer announced:\n{pretty}");
    let failover_key = c.etcd().get(&format!("{}failover", c.dcs_prefix()));
    assert!(failover_key.as_deref().is_none_or(|v| v.is_empty() || v == "{}"), "failover key: {failover_key:?}");
    let quiet_for =
        (at + SignedDuration::from_secs(5)).duration_since(Timestamp::now()).max(SignedDuration::ZERO).unsigned_abs();
    let moved = support::wait_until(quiet_for, Duration::from_millis(250), || c.leader_index() != Some(target));
    assert!(!moved, "the flushed switchover happened anyway (leader: {:?})", c.leader_name());
    let rows = list_rows(&cfg).expect("list -f json");
    assert!(led_by(&c, &rows, target, 4), "{rows:?}");
    println!("story took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_cluster_waits_for_resume_then_failover_names_the_next_leader() {
    let started = Instant::now();
    let mut c = Cluster::start(3, ClusterOptions::default());
    let old = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    println!("cluster healthy after {:?}", started.elapsed());
    let cfg = c.config_path(0).to_path_buf();

    // Every agent runs, so pause goes through PATCH /config and waits until all report it.
    let o = ctl(&cfg, &["pause", "--wait"]);
    let out = expect_ok("pause --wait", &o);
    assert!(out.ends_with("Success: cluster management is paused\n"), "{out}");
    assert!(!stderr(&o).contains("writing the config key"), "a REST API took the request: {}", stderr(&o));
    let pretty = expect_ok("list", &ctl(&cfg, &["list"]));
    assert!(pretty.contains("\n Maintenance mode: on\n"), "{pretty}");

    // The leader's host dies. Well past its lease (ttl 10) nobody has taken its place.
    c.kill_agent(old);
    c.kill_postgres(old);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rows = list_rows(&cfg).expect("list -f json");
    assert!(leaders(&rows).is_empty(), "no leader while paused: {rows:?}");
    assert_eq!(c.leader_name(), None, "no leader key");
    assert!(c.primaries_by_sql().await.is_empty(), "nobody was promoted");

    // resume: a survivor takes over within ttl and a few seconds.
    let t = Instant::now();
    let o = ctl(&cfg, &["resume", "--wait"]);
    let out = expect_ok("resume --wait", &o);
    assert!(out.ends_with("Success: cluster management is resumed\n"), "{out}");
    let new = c.wait_for_leader(Duration::from_secs(30)).expect("a leader after resume");
    println!("{} leads {:?} after resume was started", c.name(new), t.elapsed());
    assert_ne!(new, old);
    assert!(t.elapsed() < Duration::from_secs(15), "a new leader only {:?} after resume", t.elapsed());
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(15)).await, Some(new));
    let pretty = expect_ok("list", &ctl(&cfg, &["list"]));
    assert!(!pretty.contains("Maintenance mode"), "{pretty}");

    // The old leader's host comes back and rejoins under the new leader.
    c.start_agent(old);
    wait_list(&cfg, Duration::from_secs(90), "the old leader streams from the new one on timeline 2", |rows| {
        led_by(&c, rows, new, 2)
    });

    // Now the new leader dies and the operator names its successor: the member that led first.
    let cand = old;
    let bystander = (0..3).find(|&i| i != old && i != new).unwrap();
    c.kill_agent(new);
    c.kill_postgres(new);
    let t = Instant::now();
    let o = ctl(&cfg, &["failover", "--candidate", c.name(cand), "--force"]);
    let out = expect_ok("failover --candidate", &o);
    println!("failover to {} returned after {:?}", c.name(cand), t.elapsed());
    assert!(out.contains(&format!("Successfully failed over to \"{}\"", c.name(cand))), "{out}");
    assert_eq!(c.leader_index(), Some(cand));
    assert_eq!(c.wait_for_single_primary(Duration::from_secs(15)).await, Some(cand));
    wait_list(&cfg, Duration::from_secs(60), "the candidate leads on timeline 3, the bystander follows", |rows| {
        leads(rows, c.name(cand), 3) && streams(rows, c.name(bystander), 3)
    });
    let history = wait_history(&cfg, 2);
    assert_eq!(history[1]["TL"], 2, "{history:?}");
    assert_eq!(history[1]["New Leader"], c.name(cand), "{history:?}");
    println!("story took {:?}", started.elapsed());
}

const REST_USER: &str = "operator";
const REST_PASSWORD: &str = "ctl-secret-8123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reload_and_reinit_with_the_rest_credentials_from_ctl() {
    let started = Instant::now();
    let credentials = format!("{{username: {REST_USER}, password: '{REST_PASSWORD}'}}");
    let creds = credentials.clone();
    let opts = ClusterOptions::default().tweak(move |_, cfg| {
        cfg.restapi_setting("authentication", &creds).extra_yaml(&format!("ctl:\n  authentication: {creds}\n"))
    });
    let mut c = Cluster::start(3, opts);
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    println!("cluster healthy after {:?}", started.elapsed());
    let cfg = c.config_path(0).to_path_buf();
    assert_eq!(support::http_status(c.api_port(leader), "POST", "/reload"), 401, "anonymous writes are refused");
    // Two patronictl.yaml files: one with nothing but the ctl credentials, one without them.
    let with_ctl = c.dir().join("patronictl.yaml");
    let bare = c.node(0).config.patronictl_yaml();
    std::fs::write(&with_ctl, format!("{bare}ctl:\n  authentication: {credentials}\n")).unwrap();
    let without_ctl = c.dir().join("patronictl-without-ctl.yaml");
    std::fs::write(&without_ctl, &bare).unwrap();
    let mut printed = String::new();

    // A parameter that needs a restart: every member shows it pending.
    let o = ctl(&cfg, &["edit-config", "-p", "max_connections=150", "--force"]);
    let out = expect_ok("edit-config", &o);
    assert!(out.ends_with("Configuration changed\n"), "{out}");
    wait_list(&cfg, Duration::from_secs(30), "every member shows a pending restart", |rows| {
        rows.len() == 3 && rows.iter().all(pending_restart)
    });
    let before = show(c.pg_port(0), "max_connections").await;
    assert_ne!(before, "150");

    // Restarting one member restarts that one only.
    let first = (0..3).find(|&i| i != leader).unwrap();
    let pids: Vec<Option<u32>> = (0..3).map(|i| c.agent(i).postmaster_pid()).collect();
    let t = Instant::now();
    let o = ctl(&cfg, &["restart", c.name(first), "--force"]);
    let out = expect_ok("restart one member", &o);
    println!("restart of {} took {:?}", c.name(first), t.elapsed());
    printed.push_str(&out);
    assert!(out.contains(&format!("Success: restart on member {}\n", c.name(first))), "{out}");
    assert_eq!(out.matches("Success: restart").count(), 1, "{out}");
    for (i, pid) in pids.iter().enumerate() {
        let now = c.agent(i).postmaster_pid();
        assert_eq!(now != *pid, i == first, "postmaster of {}: {pid:?} then {now:?}", c.name(i));
    }
    wait_list(
        &cfg,
        Duration::from_secs(30),
        "the restarted member's pending flag clears, the others keep theirs",
        |rows| rows.len() == 3 && rows.iter().all(|r| pending_restart(r) == (r["Member"] != c.name(first))),
    );
    for i in 0..3 {
        let expected = if i == first { "150" } else { before.as_str() };
        assert_eq!(show(c.pg_port(i), "max_connections").await, expected, "max_connections on {}", c.name(i));
    }

    // --pending restarts the rest, here through a patronictl.yaml that only has the ctl credentials.
    let t = Instant::now();
    let o = ctl(&with_ctl, &["restart", "--pending", "--force"]);
    let out = expect_ok("restart --pending", &o);
    println!("restart --pending took {:?}", t.elapsed());
    printed.push_str(&out);
    for i in 0..3 {
        let line = format!("Success: restart on member {}\n", c.name(i));
        assert_eq!(out.contains(&line), i != first, "{out}");
    }
    for i in 0..3 {
        assert_eq!(show(c.pg_port(i), "max_connections").await, "150", "max_connections on {}", c.name(i));
    }
    wait_list(&cfg, Duration::from_secs(30), "no member has a pending restart any more", |rows| {
        rows.len() == 3 && !rows.iter().any(pending_restart)
    });
    assert_eq!(c.leader_index(), Some(leader), "restarts did not move the leader");
    assert!(wait_healthy(&c, Duration::from_secs(30)).is_some(), "healthy after the restarts");

    // reload: every agent accepts the request.
    let o = ctl(&cfg, &["reload", "--force"]);
    let out = expect_ok("reload", &o);
    printed.push_str(&out);
    for i in 0..3 {
        let line = format!("Reload request received for member {} and will be processed within 1 seconds", c.name(i));
        assert!(out.contains(&line), "{out}");
    }

    // Without the credentials the member's 401 is reported, naming it, and nothing restarts.
    let pid = c.agent(first).postmaster_pid();
    let o = ctl(&without_ctl, &["restart", c.name(first), "--force"]);
    println!("--- restart without credentials ({}):\n{}{}", o.status, stdout(&o), stderr(&o));
    assert!(!o.status.success(), "a restart without credentials succeeded:\n{}", stdout(&o));
    let line = format!("Failed: restart for member {}, status code=401", c.name(first));
    assert!(stdout(&o).contains(&line), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("restart: failed on 1 of 1 members"), "{}", stderr(&o));
    assert_eq!(c.agent(first).postmaster_pid(), pid, "refused, so not restarted");
    printed.push_str(&stdout(&o));
    printed.push_str(&stderr(&o));

    // A replica's data directory loses its control file while the host is down; the agent
    // leaves it alone until the operator reinitializes it.
    let db = support::connect_superuser(c.pg_port(leader)).await.unwrap();
    db.batch_execute("CREATE TABLE story (id int); INSERT INTO story VALUES (42)").await.unwrap();
    let victim = (0..3).find(|&i| i != leader && i != first).unwrap();
    c.kill_agent(victim);
    c.kill_postgres(victim);
    std::fs::remove_file(c.data_dir(victim).join("global/pg_control")).unwrap();
    c.start_agent(victim);
    assert!(
        support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
            std::fs::read_to_string(c.log_path(victim)).is_ok_and(|l| l.contains("not usable"))
        }),
        "the agent says it leaves the broken data directory alone"
    );
    let t = Instant::now();
    let o = ctl(&cfg, &["reinit", c.name(victim), "--force", "--wait"]);
    let out = expect_ok("reinit --wait", &o);
    println!("reinit --wait took {:?}", t.elapsed());
    printed.push_str(&out);
    assert!(out.contains(&format!("Success: reinitialize for member {}\n", c.name(victim))), "{out}");
    assert!(out.contains(&format!("Reinitialize is completed on: {}\n", c.name(victim))), "{out}");
    assert!(
        support::wait_until(Duration::from_secs(20), Duration::from_millis(250), || is_streaming_replica(
            &c, victim, None
        )),
        "the reinitialized replica streams"
    );
    let r = support::connect_superuser(c.pg_port(victim)).await.unwrap();
    let n: i32 = r.query_one("SELECT id FROM story", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
    let rows = list_rows(&cfg).expect("list -f json");
    assert!(streams(&rows, c.name(victim), 1), "{rows:?}");

    // The REST password is sent, never shown.
    assert!(!printed.contains(REST_PASSWORD), "a command printed the REST password");
    for i in 0..3 {
        let log = std::fs::read_to_string(c.log_path(i)).unwrap();
        assert!(!log.contains(REST_PASSWORD), "{} shows the REST password", c.log_path(i).display());
    }
    println!("story took {:?}", started.elapsed());
}
