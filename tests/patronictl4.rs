//! An operator moving from Patroni 4 keeps using patronictl's commands as they are: on one
//! Rampart cluster, `rampart` and Patroni's own patronictl 4.1 (from /opt/rampart-venv) print
//! the same thing.
//!
//! * `list` shows Patroni 4's columns (Receive LSN, Receive Lag, Replay LSN, Replay Lag) with the
//!   same values in pretty, json and tsv text (yaml as data), from the `receive_lsn` and
//!   `replay_lsn` the agents publish;
//! * patronictl's spellings work: `-c FILE` before the verb, a positional cluster name (`list`,
//!   `switchover`),
//!   `dsn -m`, `query -c ... -m/-r`;
//! * a switchover: the new leader's member key shows the new timeline as soon as its API says
//!   it is a primary, and no member reports a pending restart afterwards (a promoted replica
//!   used to report `recovery_target_timeline`);
//! * a parameter that needs a restart: `list -e` and `GET /patroni` give the reason
//!   (`max_files_per_process: 1000->900`), as patronictl shows it;
//! * `reinit --wait` on a small replica exits 0 once it is done.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{Cluster, ClusterOptions};
use support::ctl::{expect_ok, stderr, stdout};
use support::health::{status, wait_healthy};

/// `rampart ARGS` (the group options, if any, written before the verb as patronictl wants).
fn rampart(args: &[&str]) -> Output {
    run(&support::rampart_bin(), args)
}

/// `patronictl ARGS`.
fn patronictl(args: &[&str]) -> Output {
    run(&support::patronictl_bin().expect("patronictl in /opt/rampart-venv: run scripts/setup.sh"), args)
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        // For `query`: libpq's (and our) way of getting the password.
        .env("PGPASSWORD", support::SUPERUSER_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// The JSON value of a DCS key of the cluster.
fn key(c: &Cluster, name: &str) -> Option<Value> {
    c.etcd().get(&format!("{}{name}", c.dcs_prefix())).map(|v| serde_json::from_str(&v).expect("JSON in etcd"))
}

/// `list ARGS` in every format, ours and patronictl's, until a moment when nothing changed in
/// between (an agent republishes its key every cycle; WAL may move): pretty, json and tsv must
/// then be the same text, yaml the same data. Returns our json rows.
fn same_listing(cfg: &str, args: &[&str]) -> Vec<Value> {
    let with = |tool: fn(&[&str]) -> Output, format: &str| {
        let mut all = vec!["-c", cfg, "list"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", format]);
        let o = tool(&all);
        assert!(o.status.success(), "list {args:?} -f {format} failed: {}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    let yaml = |t: &str| serde_saphyr::from_str::<Value>(t).unwrap_or_else(|e| panic!("not YAML ({e}):\n{t}"));
    let mut last = String::new();
    for _ in 0..20 {
        let mut all_same = true;
        for format in ["pretty", "json", "tsv", "yaml"] {
            let ours = with(rampart, format);
            let theirs = with(patronictl, format);
            let again = with(rampart, format);
            let same = if format == "yaml" { yaml(&ours) == yaml(&theirs) } else { ours == theirs };
            if ours != again || !same {
                last = format!("-f {format}\n--- rampart:\n{ours}--- patronictl:\n{theirs}--- rampart again:\n{again}");
                all_same = false;
                break;
            }
        }
        if all_same {
            println!("--- list {args:?}, same as patronictl's:\n{}", with(rampart, "pretty"));
            return serde_json::from_str::<Value>(&with(rampart, "json")).unwrap().as_array().unwrap().clone();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("rampart list and patronictl list never agreed; last try: {last}");
}

/// `0/3000060` as a number.
fn lsn(text: &Value) -> u64 {
    let (hi, lo) = text.as_str().and_then(|t| t.split_once('/')).unwrap_or_else(|| panic!("not an LSN: {text}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) + u64::from_str_radix(lo, 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rampart_and_patronictl_4_show_and_do_the_same() {
    let started = Instant::now();
    let c = Cluster::start(3, ClusterOptions { stagger: Duration::from_secs(2), ..Default::default() });
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader and two streaming replicas");
    println!("cluster healthy after {:?}", started.elapsed());
    let cfg = c.config_path(0).to_str().expect("UTF-8 path").to_string();
    let cfg = cfg.as_str();
    // Some WAL, so that positions are not the first ones.
    support::client::sql(c.pg_port(leader), "CREATE TABLE ctl4 AS SELECT g FROM generate_series(1, 20000) g").await;

    // list: Patroni 4's columns, the same text as patronictl's.
    let rows = same_listing(cfg, &[]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!((row["Member"].as_str(), row["TL"].as_u64()), (Some(c.name(i)), Some(1)), "{row}");
        if i == leader {
            assert_eq!((row["Role"].as_str(), row["State"].as_str()), (Some("Leader"), Some("running")), "{row}");
            assert!(row.get("Receive LSN").is_none() && row.get("Replay Lag").is_none(), "{row}");
            continue;
        }
        assert_eq!((row["Role"].as_str(), row["State"].as_str()), (Some("Replica"), Some("streaming")), "{row}");
        assert_eq!((&row["Receive Lag"], &row["Replay Lag"]), (&json!(0), &json!(0)), "{row}");
        // The values come from what the agent publishes, as Patroni 4 publishes them.
        let m = key(&c, &format!("members/{}", c.name(i))).expect("member key");
        assert_eq!(m["receive_lsn"].as_u64(), Some(lsn(&row["Receive LSN"])), "{m}");
        assert_eq!(m["replay_lsn"].as_u64(), Some(lsn(&row["Replay LSN"])), "{m}");
        assert!(lsn(&row["Replay LSN"]) > 0x300_0000, "past the table's WAL: {row}");
    }
    assert!(!rows.iter().any(|r| r.get("Lag in MB").is_some()), "no Patroni 3 column");

    // patronictl's spellings: -c before the verb, the cluster by name, --dcs with no file.
    let named = expect_ok("-c before list, cluster named", &rampart(&["-c", cfg, "list", "postgres", "-f", "json"]));
    let named: Value = serde_json::from_str(&named).unwrap();
    assert_eq!(named.as_array().map(Vec::len), Some(3), "{named}");
    let url = format!("etcd3://{}/db", c.etcd().host());
    let via_url = expect_ok("--dcs before list", &rampart(&["--dcs", &url, "list", "postgres", "-f", "tsv"]));
    assert_eq!(via_url.lines().count(), 4, "{via_url}");
    let other = expect_ok("list of another cluster", &rampart(&["-c", cfg, "list", "nosuch"]));
    assert_eq!(other, stdout(&patronictl(&["-c", cfg, "list", "nosuch"])), "an empty cluster, as patronictl shows it");

    // dsn -m / -r, as patronictl answers.
    let replica = (0..3).find(|&i| i != leader).unwrap();
    for args in [
        vec!["-c", cfg, "dsn", "-m", c.name(replica)],
        vec!["-c", cfg, "dsn", "postgres", "--role", "replica"],
        vec!["-c", cfg, "dsn"],
    ] {
        let ours = expect_ok(&format!("{args:?}"), &rampart(&args));
        assert_eq!(ours, stdout(&patronictl(&args)), "{args:?}");
    }
    assert_eq!(
        expect_ok("dsn -m", &rampart(&["-c", cfg, "dsn", "-m", c.name(replica)])),
        format!("host=127.0.0.1 port={}\n", c.pg_port(replica))
    );

    // query: on a member by name or by role, the same table as patronictl's.
    let sql = "SELECT 1 AS one, current_setting('port') AS port";
    for pick in [vec!["-m", c.name(replica)], vec!["-r", "primary"], vec!["-r", "replica"]] {
        let mut args = vec!["-c", cfg, "query", "postgres", "-U", "postgres", "-c", sql];
        args.extend_from_slice(&pick);
        let ours = expect_ok(&format!("{args:?}"), &rampart(&args));
        assert_eq!(ours, stdout(&patronictl(&args)), "{args:?}");
    }
    let on_replica =
        expect_ok("query -m", &rampart(&["-c", cfg, "query", "-U", "postgres", "-c", sql, "-m", c.name(replica)]));
    assert_eq!(on_replica, format!("one\tport\n1\t{}\n", c.pg_port(replica)));
    let on_primary =
        expect_ok("query -r primary", &rampart(&["-c", cfg, "query", "-U", "postgres", "-c", sql, "-r", "primary"]));
    assert_eq!(on_primary, format!("one\tport\n1\t{}\n", c.pg_port(leader)));
    let json = expect_ok(
        "query --format json",
        &rampart(&["-c", cfg, "query", "-U", "postgres", "-c", sql, "-m", c.name(leader), "--format", "json"]),
    );
    assert_eq!(json, format!("[{{\"one\": \"1\", \"port\": \"{}\"}}]\n", c.pg_port(leader)));
    let bad = rampart(&["-c", cfg, "query", "-U", "postgres", "-c", "SELECT * FROM no_such_table"]);
    assert!(!bad.status.success(), "a failed query exits non-zero: {}", stdout(&bad));
    assert!(stdout(&bad).ends_with("\tERROR, SQLSTATE: 42P01\n"), "{}", stdout(&bad));
    let theirs = patronictl(&["-c", cfg, "query", "-U", "postgres", "-c", "SELECT * FROM no_such_table"]);
    assert!(stdout(&theirs).ends_with("\tERROR, SQLSTATE: 42P01\n"), "{}", stdout(&theirs));

    // A switchover, the cluster named as patronictl 4 names it: the moment the candidate's API
    // says it is a primary, its member key already shows the new timeline. A cluster name that
    // is not the one asked for is refused before anything happens.
    let clash = rampart(&["-c", cfg, "switchover", "other", "--scope", "postgres", "--force"]);
    assert!(
        !clash.status.success() && stderr(&clash).contains("(other) is not --scope postgres"),
        "{}",
        stderr(&clash)
    );
    let t = Instant::now();
    let mut switchover = Command::new(support::rampart_bin())
        .args(["-c", cfg, "switchover", "postgres", "--candidate", c.name(replica), "--force"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning rampart switchover");
    let mut key_when_primary = None;
    let promoted = support::wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
        if status(&c, replica).is_some_and(|s| s["role"] == "primary") {
            key_when_primary = key(&c, &format!("members/{}", c.name(replica)));
            return true;
        }
        false
    });
    let out = switchover.wait().expect("rampart switchover");
    assert!(promoted && out.success(), "no switchover to {} ({out})", c.name(replica));
    println!("{} answered as a primary {:?} after the switchover started", c.name(replica), t.elapsed());
    let m = key_when_primary.expect("member key");
    assert_eq!((m["role"].as_str(), m["timeline"].as_u64()), (Some("primary"), Some(2)), "{m}");

    // Once the old leader streams again on the new timeline, nobody reports a pending restart
    // and both tools agree on the new picture.
    let back = support::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        support::health::is_streaming_replica(&c, leader, Some(2))
    });
    assert!(back, "{} did not rejoin on timeline 2", c.name(leader));
    let rows = same_listing(cfg, &[]);
    assert_eq!(rows[replica]["Role"], "Leader", "{rows:?}");
    assert!(rows.iter().all(|r| r["TL"] == 2 && r.get("Pending restart").is_none()), "{rows:?}");
    assert!(status(&c, replica).is_some_and(|s| s.get("pending_restart").is_none()));

    // A parameter that needs a restart: the reason, in the member keys and the API.
    expect_ok("edit-config -p", &rampart(&["-c", cfg, "edit-config", "-p", "max_files_per_process=900", "--force"]));
    let reason = json!({"max_files_per_process": {"old_value": "1000", "new_value": "900"}});
    let flagged = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        (0..3).all(|i| status(&c, i).is_some_and(|s| s["pending_restart_reason"] == reason))
    });
    assert!(flagged, "no pending_restart_reason in GET /patroni: {:?}", status(&c, 0));
    let rows = same_listing(cfg, &["-e"]);
    for row in &rows {
        assert_eq!(row["Pending restart"], "*", "{row}");
        assert_eq!(row["Pending restart reason"], "max_files_per_process: 1000->900", "{row}");
    }

    // reinit --wait on a small replica: done quickly, and it says so.
    let t = Instant::now();
    let out =
        expect_ok("reinit --wait", &rampart(&["-c", cfg, "reinit", "postgres", c.name(leader), "--force", "--wait"]));
    println!("reinit --wait took {:?}", t.elapsed());
    assert!(out.contains(&format!("Reinitialize is completed on: {}", c.name(leader))), "{out}");
    let streams = support::wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        support::health::is_streaming_replica(&c, leader, Some(2))
    });
    assert!(streams, "{} does not stream after its reinit", c.name(leader));
    println!("whole story took {:?}", started.elapsed());
}
