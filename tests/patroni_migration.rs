//! A running Patroni cluster moved to Rampart one member at a time, under a write load, the way
//! `docs/migrate-from-patroni.md` tells an operator to do it.
//!
//! Three members, each with one Patroni-format file that first Patroni (4.x, from PyPI) and then
//! `rampart agent` reads unchanged, bootstrap as a Patroni cluster with Patroni-valid timing
//! (Patroni raises a `ttl` below 20 to 20) in synchronous mode (`on`, two synchronous
//! standbys), so that no acknowledged commit may be lost to a crash. Throughout, a client inserts unique rows
//! through a multi-host `target_session_attrs=read-write` connection string and records each
//! acknowledged one; a probe writes to every member directly and a monitor asks every member
//! `pg_is_in_recovery()` every 150 ms, to catch two writable primaries. Then, checking the
//! cluster with `rampart list` and `patronictl list` between steps:
//!
//! 1. a synchronous standby's Patroni is stopped and `rampart agent` started with the same
//!    file: it joins as a streaming replica;
//! 2. `patronictl switchover` hands the leader from Patroni to that Rampart member;
//! 3. the old Patroni leader is moved to Rampart too;
//! 4. `patronictl switchover` hands the leader from Rampart to the last Patroni member (what a
//!    rollback does);
//! 5. that Patroni leader crashes (Patroni and postmaster SIGKILLed together): a Rampart member
//!    takes over, and Patroni, restarted, follows it;
//! 6. the Rampart leader crashes: the other Rampart member or the Patroni member takes over,
//!    and the crashed member, restarted, rejoins;
//! 7. the last Patroni member is moved to Rampart (after a switchover if it leads).
//!
//! At the end every acknowledged row is on the leader, no two members ever accepted a write in
//! the same probe round nor were out of recovery in the same sample, the leader streams to both
//! others, `rampart list` and `patronictl list` name the same leader and show the same history
//! (one timeline switch per promotion, by either kind), and no member shows a pending restart
//! (a promoted member used to, for the recovery setting its rewritten file no longer has).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{Cluster, ClusterOptions};
use support::ctl::{ctl, expect_ok};
use support::health::wait_healthy;
use support::patroni::Patroni;
use support::write_probe::{never_two_writable, WriteProbe};

/// Fast timing that Patroni accepts: `ttl` at its minimum of 20, `loop_wait + 2 * retry_timeout <= ttl`
/// (`loop_wait` 2 rather than 1 spares the shared CPUs three Python processes looping every second).
const TTL: u64 = 20;
const LOOP_WAIT: u64 = 2;
const RETRY_TIMEOUT: u64 = 5;
/// `bootstrap.dcs` lines of every member's file: synchronous replication to both replicas, so that
/// either may take over from a crashed leader with every acknowledged commit.
const SYNC_MODE: &str = "    synchronous_mode: on\n    synchronous_node_count: 2\n";
/// Generous bound for any step to settle: a crash takes about `ttl`, a rewind and rejoin more.
const SETTLE: Duration = Duration::from_secs(120);

/// Who runs a member.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Patroni,
    Rampart,
}

/// The cluster being migrated. Field order matters: the Patroni members are stopped before the
/// cluster's agents, etcd and directory go.
struct Mixed {
    patroni: Vec<Option<Patroni>>,
    c: Cluster,
    started: Instant,
}

impl Mixed {
    fn kind(&self, i: usize) -> Kind {
        if self.patroni[i].is_some() {
            Kind::Patroni
        } else {
            Kind::Rampart
        }
    }

    fn describe(&self, i: usize) -> String {
        format!("{} ({:?})", self.c.name(i), self.kind(i))
    }

    fn step(&self, what: &str) {
        println!("\n=== [{:6.1} s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn start_patroni(&mut self, i: usize) {
        self.patroni[i] = Some(Patroni::start_node(&self.c, i));
    }

    /// Stops member `i`'s Patroni (which stops its PostgreSQL) and starts `rampart agent` with
    /// the same file.
    fn migrate(&mut self, i: usize) {
        let mut patroni = self.patroni[i].take().unwrap_or_else(|| panic!("{} runs no Patroni", self.c.name(i)));
        assert!(patroni.stop(Duration::from_secs(60)), "Patroni of {} did not stop within 60 s", self.c.name(i));
        self.c.start_agent(i);
    }

    /// A crashed machine: member `i`'s agent (Patroni or Rampart) and postmaster SIGKILLed.
    fn crash(&mut self, i: usize) {
        match self.patroni[i].as_mut() {
            Some(patroni) => {
                patroni.crash();
            }
            None => {
                self.c.kill_agent(i);
                self.c.kill_postgres(i);
            }
        }
    }

    /// Starts member `i` again with the kind it had.
    fn restart(&mut self, i: usize) {
        match self.kind(i) {
            Kind::Patroni => self.start_patroni(i),
            Kind::Rampart => self.c.start_agent(i),
        }
    }

    /// Waits until one leader answers `/primary` and both others stream from it, prints both
    /// tools' member tables, checks they agree on the leader and returns it.
    fn wait_healthy(&self, after: &str) -> usize {
        let leader = wait_healthy(&self.c, SETTLE).unwrap_or_else(|| panic!("no healthy cluster {after}"));
        let (ours, theirs) = self.leaders_listed();
        assert_eq!(ours.as_deref(), Some(self.c.name(leader)), "rampart list's leader {after}");
        assert_eq!(theirs.as_deref(), Some(self.c.name(leader)), "patronictl list's leader {after}");
        println!("healthy {after}: leader {}", self.describe(leader));
        leader
    }

    /// The leader in `rampart list` and in `patronictl list` (both printed as tables too).
    fn leaders_listed(&self) -> (Option<String>, Option<String>) {
        let config = self.c.config_path(0);
        expect_ok("rampart list", &ctl(config, &["list"]));
        let theirs = support::patronictl(config, &["list"]);
        expect_ok("patronictl list", &theirs);
        let leader_of = |out: &std::process::Output| -> Option<String> {
            let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
            rows.iter().find(|r| r["Role"] == "Leader").and_then(|r| r["Member"].as_str()).map(str::to_owned)
        };
        (
            leader_of(&ctl(config, &["list", "-f", "json"])),
            leader_of(&support::patronictl(config, &["list", "-f", "json"])),
        )
    }

    /// Waits until a member other than `old` holds the leader key and answers `/primary`.
    fn wait_takeover(&self, old: usize) -> usize {
        let mut new = None;
        let took = support::wait_until(SETTLE, Duration::from_millis(100), || {
            new = self
                .c
                .leader_index()
                .filter(|&l| l != old && support::http_status(self.c.api_port(l), "GET", "/primary") == 200);
            new.is_some()
        });
        assert!(took, "no member took over from {}", self.describe(old));
        new.unwrap()
    }

    /// Crashes the leader `old`, waits for another member to take over, restarts `old` with its
    /// kind and waits until it streams from the new leader, which it returns.
    fn crash_and_restart(&mut self, old: usize) -> usize {
        let at = Instant::now();
        self.crash(old);
        let new = self.wait_takeover(old);
        let took = at.elapsed().as_secs_f64();
        println!("{} took over from {} after {took:.1} s", self.describe(new), self.describe(old));
        self.restart(old);
        assert_eq!(self.wait_healthy(&format!("after {} restarted", self.describe(old))), new);
        new
    }

    /// `patronictl switchover` from the current leader to `candidate`, waiting until it leads.
    /// The cluster runs in synchronous mode, where a switchover goes only to a synchronous
    /// standby (Patroni answers 412 otherwise): a member that has just restarted streams before
    /// the leader names it again, so the switchover waits for that first.
    fn switchover(&self, leader: usize, candidate: usize) {
        let named = support::wait_until(SETTLE, Duration::from_millis(200), || {
            self.sync_standbys().iter().any(|s| s == self.c.name(candidate))
        });
        assert!(named, "{} is never named a synchronous standby: {:?}", self.describe(candidate), self.sync_standbys());
        let out = support::patronictl(
            self.c.config_path(0),
            &["switchover", "--leader", self.c.name(leader), "--candidate", self.c.name(candidate), "--force"],
        );
        expect_ok("patronictl switchover", &out);
        let done = support::wait_until(SETTLE, Duration::from_millis(100), || {
            self.c.leader_index() == Some(candidate)
                && support::http_status(self.c.api_port(candidate), "GET", "/primary") == 200
        });
        assert!(done, "{} does not lead after the switchover", self.describe(candidate));
    }

    /// The synchronous standbys the DCS `sync` key names.
    fn sync_standbys(&self) -> Vec<String> {
        let key = self.c.etcd().get(&format!("{}sync", self.c.dcs_prefix()));
        let parsed: Option<Value> = key.and_then(|v| serde_json::from_str(&v).ok());
        let names = parsed.and_then(|k| k["sync_standby"].as_str().map(str::to_owned)).unwrap_or_default();
        names.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect()
    }
}

/// A client inserting unique ids into `story` through a multi-host read-write connection
/// string, reconnecting after any error, and recording each id whose commit was acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<i32>>>,
    failed: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(ports: &[u16]) -> Writer {
        let hosts = vec!["127.0.0.1"; ports.len()].join(",");
        let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let conninfo = format!(
            "host={hosts} port={ports} user={} password={} dbname=postgres target_session_attrs=read-write \
             connect_timeout=2 application_name=migration-writer",
            support::SUPERUSER,
            support::SUPERUSER_PASSWORD
        );
        let config: tokio_postgres::Config = conninfo.parse().expect("multi-host connection string");
        let (acked, failed, stop) =
            (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)), Arc::new(AtomicBool::new(false)));
        let (a, f, s) = (acked.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut id = 0i32;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let attempt = async {
                    if client.is_none() {
                        let (db, connection) = config.connect(tokio_postgres::NoTls).await?;
                        tokio::spawn(connection);
                        client = Some(db);
                    }
                    client.as_ref().expect("connected").execute("INSERT INTO story VALUES ($1)", &[&id]).await
                };
                // A commit waits while the leader changes its synchronous standbys; an attempt
                // left unanswered has an unknown outcome and is simply not counted.
                match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                    Ok(Ok(_)) => a.lock().unwrap().push(id),
                    _ => {
                        client = None;
                        *f.lock().unwrap() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Writer { acked, failed, stop, task }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the client; returns the acknowledged ids and the number of failed attempts.
    async fn finish(self) -> (Vec<i32>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task");
        let acked = self.acked.lock().unwrap().clone();
        let failed = *self.failed.lock().unwrap();
        (acked, failed)
    }
}

/// When (since the monitor started) a sample found two or more members out of recovery, and which.
type TwoPrimaries = (Duration, Vec<usize>);

/// Samples every member's role (`pg_is_in_recovery()`) every 150 ms over one connection per
/// member, reconnecting after errors, and records every round in which two members said they were
/// primaries (not in recovery).
struct RoleMonitor {
    two_primaries: Arc<Mutex<Vec<TwoPrimaries>>>,
    rounds: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RoleMonitor {
    fn start(ports: &[u16]) -> RoleMonitor {
        let ports = ports.to_vec();
        let (two, rounds, stop) =
            (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)), Arc::new(AtomicBool::new(false)));
        let (t, r, s) = (two.clone(), rounds.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut conns: Vec<Option<tokio_postgres::Client>> = ports.iter().map(|_| None).collect();
            while !s.load(Ordering::Relaxed) {
                let at = started.elapsed();
                let mut primaries = Vec::new();
                for (i, port) in ports.iter().enumerate() {
                    if conns[i].is_none() {
                        let connect = support::connect_superuser(*port);
                        conns[i] =
                            tokio::time::timeout(Duration::from_secs(1), connect).await.ok().and_then(Result::ok);
                    }
                    let Some(db) = &conns[i] else { continue };
                    let ask = support::query_one_bool(db, "SELECT pg_is_in_recovery()");
                    match tokio::time::timeout(Duration::from_secs(1), ask).await {
                        Ok(Ok(false)) => primaries.push(i),
                        Ok(Ok(true)) => {}
                        _ => conns[i] = None,
                    }
                }
                *r.lock().unwrap() += 1;
                if primaries.len() > 1 {
                    t.lock().unwrap().push((at, primaries));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        RoleMonitor { two_primaries: two, rounds, stop, task }
    }

    /// Stops sampling; returns the number of rounds and those that saw two primaries.
    async fn finish(self) -> (u32, Vec<TwoPrimaries>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("role monitor task");
        let rounds = *self.rounds.lock().unwrap();
        let two = self.two_primaries.lock().unwrap().clone();
        (rounds, two)
    }
}

/// Waits until the client has had `more` commits acknowledged beyond `since` (it writes on).
fn wait_for_writes(w: &Writer, since: usize, more: usize) {
    let ok = support::wait_until(SETTLE, Duration::from_millis(50), || w.acked_count() >= since + more);
    assert!(ok, "the client got no acknowledged write for {SETTLE:?}");
}

/// Members the leader's `pg_stat_replication` shows streaming.
async fn streaming_from(c: &Cluster, leader: usize) -> Vec<String> {
    let db = support::connect_superuser(c.pg_port(leader)).await.expect("connect to the leader");
    let rows = db
        .query("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1", &[])
        .await
        .expect("pg_stat_replication");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_cluster_moves_to_rampart_one_member_at_a_time() {
    let options = ClusterOptions {
        ttl: TTL,
        loop_wait: LOOP_WAIT,
        retry_timeout: RETRY_TIMEOUT,
        start_agents: false,
        ..ClusterOptions::default()
    }
    .tweak(|_, mut n| {
        n.dcs_yaml = SYNC_MODE.into();
        n
    });
    let c = Cluster::start(3, options);
    let mut m = Mixed { patroni: (0..3).map(|_| None).collect(), c, started: Instant::now() };

    m.step("three Patroni members bootstrap a cluster");
    for i in 0..3 {
        m.start_patroni(i);
    }
    let first = m.wait_healthy("after Patroni's bootstrap");
    support::client::sql(
        m.c.pg_port(first),
        "CREATE TABLE story (id int PRIMARY KEY); CREATE TABLE probe (node int, n bigint)",
    )
    .await;
    let both_sync = support::wait_until(SETTLE, Duration::from_millis(200), || m.sync_standbys().len() == 2);
    assert!(both_sync, "Patroni never named two synchronous standbys: {:?}", m.sync_standbys());

    let ports: Vec<u16> = (0..3).map(|i| m.c.pg_port(i)).collect();
    let writer = Writer::start(&ports);
    let probe = WriteProbe::start(&m.c, Duration::from_millis(150));
    let roles = RoleMonitor::start(&ports);
    wait_for_writes(&writer, 0, 20);

    m.step("a synchronous standby's Patroni is replaced by rampart agent with the same file");
    let standby = (0..3).find(|&i| i != first).expect("a replica");
    m.migrate(standby);
    m.wait_healthy(&format!("after {} moved to Rampart", m.describe(standby)));
    let counted = support::wait_until(SETTLE, Duration::from_millis(200), || {
        m.sync_standbys().iter().any(|s| s == m.c.name(standby))
    });
    assert!(counted, "the Patroni leader does not count {} as synchronous", m.describe(standby));
    wait_for_writes(&writer, writer.acked_count(), 20);

    m.step("patronictl switchover hands the leader from Patroni to the Rampart member");
    m.switchover(first, standby);
    let mut leader = m.wait_healthy("after the switchover onto Rampart");
    assert_eq!(leader, standby);
    wait_for_writes(&writer, writer.acked_count(), 20);

    m.step("the former Patroni leader is moved to Rampart too");
    m.migrate(first);
    m.wait_healthy(&format!("after {} moved to Rampart", m.describe(first)));
    wait_for_writes(&writer, writer.acked_count(), 20);

    let patroni_member = (0..3).find(|&i| m.kind(i) == Kind::Patroni).expect("a Patroni member");
    m.step("patronictl switchover hands the leader from Rampart to the Patroni member");
    m.switchover(leader, patroni_member);
    leader = m.wait_healthy("after the switchover onto Patroni");
    wait_for_writes(&writer, writer.acked_count(), 20);

    m.step("the Patroni leader crashes: a Rampart member takes over, and Patroni, restarted, follows it");
    leader = m.crash_and_restart(leader);
    assert_eq!(m.kind(leader), Kind::Rampart, "only Rampart members were left to take over");
    wait_for_writes(&writer, writer.acked_count(), 20);

    m.step("the Rampart leader crashes: the other Rampart member or the Patroni member takes over");
    leader = m.crash_and_restart(leader);
    wait_for_writes(&writer, writer.acked_count(), 20);

    if leader == patroni_member {
        m.step("patronictl switchover hands the leader from Patroni back to Rampart");
        let rampart_member = (0..3).find(|&i| m.kind(i) == Kind::Rampart).expect("a Rampart member");
        m.switchover(leader, rampart_member);
        assert_eq!(m.wait_healthy("after the switchover back onto Rampart"), rampart_member);
        wait_for_writes(&writer, writer.acked_count(), 20);
    }

    m.step("the last Patroni member is moved to Rampart");
    m.migrate(patroni_member);
    leader = m.wait_healthy("with every member on Rampart");
    assert!((0..3).all(|i| m.kind(i) == Kind::Rampart));
    wait_for_writes(&writer, writer.acked_count(), 20);

    m.step("checks");
    let (acked, failed) = writer.finish().await;
    let rounds = probe.finish().await;
    let (samples, two_primaries) = roles.finish().await;
    let kept = support::client::story_ids(m.c.pg_port(leader)).await;
    let lost: Vec<i32> = acked.iter().copied().filter(|id| kept.binary_search(id).is_err()).collect();
    println!(
        "{} commits acknowledged ({} attempts failed or went unanswered), {} rows on the leader, {} lost; \
         {} write-probe rounds, {} role samples of every member",
        acked.len(),
        failed,
        kept.len(),
        lost.len(),
        rounds.len(),
        samples
    );
    assert!(lost.is_empty(), "acknowledged commits missing on the leader {}: {lost:?}", m.describe(leader));
    never_two_writable(&rounds);
    assert!(two_primaries.is_empty(), "two members out of recovery at once (time, members): {two_primaries:?}");
    let rows = support::ctl::list_rows(m.c.config_path(0)).expect("rampart list -f json");
    let pending: Vec<&Value> = rows.iter().filter(|r| support::ctl::pending_restart(r)).collect();
    assert!(pending.is_empty(), "members asking for a restart nobody configured: {pending:?}");
    // The history key, written by whichever kind promoted: one row per timeline switch, read
    // alike by both tools.
    let timeline = support::health::timeline(&m.c, leader).expect("the leader's timeline");
    let history = |out: std::process::Output| -> Value { serde_json::from_slice(&out.stdout).unwrap_or(Value::Null) };
    let timelines = |rows: &Value| -> Vec<u64> {
        rows.as_array().map(|r| r.iter().filter_map(|row| row["TL"].as_u64()).collect()).unwrap_or_default()
    };
    let config = m.c.config_path(0);
    let complete = support::wait_until(SETTLE, Duration::from_millis(200), || {
        timelines(&history(ctl(config, &["history", "-f", "json"]))) == (1..timeline).collect::<Vec<_>>()
    });
    let ours = history(ctl(config, &["history", "-f", "json"]));
    assert!(complete, "rampart history does not list timelines 1..{timeline}: {ours}");
    assert_eq!(history(support::patronictl(config, &["history", "-f", "json"])), ours, "patronictl history");
    let others: Vec<String> = (0..3).filter(|&i| i != leader).map(|i| m.c.name(i).to_owned()).collect();
    assert_eq!(streaming_from(&m.c, leader).await, others, "members streaming from the leader");
}
