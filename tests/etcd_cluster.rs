//! Story: a cluster on a three-member etcd, as seeds 002 and 003 run it. Losing one etcd member
//! out of three costs nothing: etcd keeps its quorum and the agents go on through the others.
//!
//! 1. Three members bootstrap against three etcd members; every agent's file lists all three.
//! 2. The etcd member every agent tries first is killed: for two ttl's the leader keeps its lock
//!    and its timeline, and the client's writes go on (no failover without a cause).
//! 3. It comes back and rejoins etcd.
//! 4. etcd's raft leader is killed while the client writes: etcd elects another, and again the
//!    leader keeps its lock and its timeline, and the writes go on.
//!
//! The same cluster on an etcd that requires TLS client certificates and a password, as a
//! hardened production etcd does, bootstraps, fails over after a crash and goes on when an etcd
//! member goes; and the etcd password appears in no log.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::health::{timeline, wait_healthy};

const TTL: Duration = Duration::from_secs(10);

/// Writes to the leader's PostgreSQL every 50 ms until dropped, reconnecting after a failure;
/// records when each write was acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Writer {
    async fn start(port: u16) -> Writer {
        let db = support::connect_superuser(port).await.expect("the leader");
        db.batch_execute("CREATE TABLE etcd_writes (id serial PRIMARY KEY)").await.unwrap();
        let (acked, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (a, s) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut db = Some(db);
            while !s.load(Ordering::Relaxed) {
                if db.is_none() {
                    db = support::connect_superuser(port).await.ok();
                }
                let ok = match &db {
                    Some(d) => d.batch_execute("INSERT INTO etcd_writes DEFAULT VALUES").await.is_ok(),
                    None => false,
                };
                if ok {
                    a.lock().unwrap().push(Instant::now());
                } else {
                    db = None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Writer { acked, stop }
    }

    /// The longest time between two acknowledged writes after `since` (or since the last one
    /// before it), up to now: printed, for the record.
    fn longest_gap_after(&self, since: Instant) -> Duration {
        let acked = self.acked.lock().unwrap();
        let mut times: Vec<Instant> = acked.iter().copied().filter(|t| *t > since).collect();
        times.insert(0, acked.iter().copied().rfind(|t| *t <= since).unwrap_or(since));
        times.push(Instant::now());
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    fn acked_after(&self, t: Instant) -> bool {
        self.acked.lock().unwrap().iter().any(|a| *a > t)
    }
}

/// How often the leader's agent has stopped its primary for want of etcd so far.
fn fenced(c: &Cluster, leader: usize) -> usize {
    std::fs::read_to_string(&c.node(leader).log_path).unwrap_or_default().matches("demoting").count()
}

/// Watches the cluster for `during`: the leader must stay `leader` on timeline `tl` throughout.
async fn assert_no_failover(c: &Cluster, leader: usize, tl: Option<u64>, during: Duration, what: &str) {
    let until = Instant::now() + during;
    while Instant::now() < until {
        assert_eq!(c.leader_name().as_deref(), Some(c.name(leader)), "{what}: the leader changed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(timeline(c, leader), tl, "{what}: the leader's timeline changed");
}

/// The etcd member that is raft leader now, by its index among the cluster's members.
fn raft_leader(c: &Cluster) -> Option<usize> {
    let status = |i: usize| -> Option<(u64, u64)> {
        let out = c.etcd_members().nth(i)?.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let s = &v[0]["Status"];
        Some((s["header"]["member_id"].as_u64()?, s["leader"].as_u64()?))
    };
    (0..3).find(|&i| status(i).is_some_and(|(me, leader)| me == leader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_etcd_member_out_of_three_costs_no_failover() {
    let mut c = Cluster::start(3, ClusterOptions { etcd_members: 3, ..ClusterOptions::default() });
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let tl = timeline(&c, leader);

    // 1. Every agent knows every etcd member.
    for i in 0..3 {
        let yaml = std::fs::read_to_string(c.config_path(i)).unwrap();
        for e in c.etcd_members() {
            assert!(yaml.contains(&e.host()), "node {i}'s file lists etcd member {}: {yaml}", e.host());
        }
    }
    let list = String::from_utf8_lossy(&c.etcd().etcdctl(&["member", "list"]).stdout).into_owned();
    assert_eq!(list.lines().filter(|l| l.contains("started")).count(), 3, "{list}");
    let writer = Writer::start(c.pg_port(leader)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. The member everyone tries first is killed: nothing changes for the cluster.
    let (killed, fences) = (Instant::now(), fenced(&c, leader));
    c.etcd_member_mut(0).stop();
    assert_no_failover(&c, leader, tl, 2 * TTL, "etcd member 0 killed").await;
    println!("etcd member 0 killed: longest pause between writes {:?}", writer.longest_gap_after(killed));
    assert_eq!(fenced(&c, leader), fences, "the leader did not fence itself");
    assert!(writer.acked_after(killed + 2 * TTL - Duration::from_secs(1)), "the leader still takes writes");

    // 3. It comes back and rejoins.
    c.etcd_member_mut(0).start_again();
    let list = String::from_utf8_lossy(&c.etcd().etcdctl(&["member", "list"]).stdout).into_owned();
    assert_eq!(list.lines().filter(|l| l.contains("started")).count(), 3, "{list}");

    // 4. etcd's raft leader killed under the write load: a new one, and still no failover.
    let raft = raft_leader(&c).expect("etcd has a raft leader");
    let (killed, fences) = (Instant::now(), fenced(&c, leader));
    c.etcd_member_mut(raft).stop();
    assert!(
        support::wait_until(Duration::from_secs(10), Duration::from_millis(200), || raft_leader(&c)
            .is_some_and(|r| r != raft)),
        "etcd elected another raft leader"
    );
    assert_no_failover(&c, leader, tl, TTL + Duration::from_secs(2), "etcd's raft leader killed").await;
    println!("etcd raft leader killed: longest pause between writes {:?}", writer.longest_gap_after(killed));
    assert_eq!(fenced(&c, leader), fences, "the leader did not fence itself");
    assert!(writer.acked_after(killed + TTL), "the leader still takes writes");
    c.etcd_member_mut(raft).start_again();
}

/// The leader's first etcd endpoint is the member cut off from the other two (a minority of one:
/// it can neither renew a lease nor answer a linearizable read). Every host still reaches it, so
/// an agent that kept using it would act on what it last saw. The leader must go on through
/// another endpoint and keep its lock with no failover, or else stop taking writes before its
/// lease could expire; never may two members take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_first_etcd_endpoint_cut_off_from_the_other_members() {
    let c = Cluster::start(3, ClusterOptions { etcd_members: 3, ..ClusterOptions::default() }.in_namespaces());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let tl = timeline(&c, leader);
    let db = c.connect_superuser(leader).await.unwrap();
    db.batch_execute("CREATE TABLE probe (node int, n bigint)").await.unwrap();
    let probe = support::write_probe::WriteProbe::start(&c, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let net = c.net();
    let others = [net.host("etcd1").addr, net.host("etcd2").addr];
    let (cut, fences) = (Instant::now(), fenced(&c, leader));
    net.cut(net.host("etcd"), &others, support::netns::Direction::Both);
    tokio::time::sleep(2 * TTL).await;
    let rounds = probe.rounds();
    support::write_probe::never_two_writable(&rounds);
    if fenced(&c, leader) == fences {
        // Kept the lock through another endpoint: no failover, writes went on.
        assert_eq!(c.leader_name().as_deref(), Some(c.name(leader)), "the leader kept its lock");
        assert_eq!(timeline(&c, leader), tl, "no promotion anywhere");
        let last = support::write_probe::last_accept(&rounds, leader).expect("the leader took writes");
        assert!(last > cut + TTL, "the leader still takes writes");
        println!("the leader kept its lock through another etcd endpoint");
    } else {
        println!("the leader fenced itself");
    }
    net.heal(net.host("etcd"));
    let r = probe.finish().await;
    support::write_probe::never_two_writable(&r);
    assert!(wait_healthy(&c, Duration::from_secs(90)).is_some(), "the cluster converges");
}

/// etcd's password in the TLS story.
const ETCD_PASSWORD: &str = "etcd-pw-never-logged";

/// Turns on etcd's authentication: `root` with [`ETCD_PASSWORD`] for the agents, and the
/// harness's own etcdctl known by its certificate's name (`rampart-client`, also a root).
fn enable_etcd_auth(c: &Cluster) {
    let ctl = |args: &[&str]| {
        let out = c.etcd().etcdctl(args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ctl(&["user", "add", &format!("root:{ETCD_PASSWORD}")]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["user", "add", "rampart-client:harness-only"]);
    ctl(&["user", "grant-role", "rampart-client", "root"]);
    ctl(&["auth", "enable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_a_three_member_etcd_with_tls_client_certificates_and_a_password() {
    let options = ClusterOptions { etcd_members: 3, etcd_tls: true, start_agents: false, ..ClusterOptions::default() }
        .tweak(|_, config| config.etcd_setting("username", "root").etcd_setting("password", ETCD_PASSWORD));
    let mut c = Cluster::start(3, options);
    enable_etcd_auth(&c);
    for i in 0..3 {
        let yaml = std::fs::read_to_string(c.config_path(i)).unwrap();
        assert!(yaml.contains("protocol: https") && yaml.contains("cert:"), "node {i} uses TLS: {yaml}");
        c.start_agent(i);
    }

    // Bootstrap over TLS, authenticated.
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader elected over TLS with a password");
    let tl = timeline(&c, leader).expect("the leader's timeline");

    // The leader's machine crashes: a replica takes over, through the same etcd.
    c.kill_agent(leader);
    c.kill_postgres(leader);
    let promoted = support::wait_until(3 * TTL, Duration::from_millis(200), || {
        c.leader_index().is_some_and(|l| l != leader && timeline(&c, l).is_some_and(|t| t > tl))
    });
    assert!(promoted, "a replica was promoted over TLS; leader now {:?}", c.leader_name());
    let new_leader = c.leader_index().expect("the new leader");

    // An etcd member goes: the agents authenticate on the others and nothing fails over.
    c.start_agent(leader);
    let healthy = wait_healthy(&c, Duration::from_secs(90)).expect("the old leader rejoins");
    assert_eq!(healthy, new_leader, "the leader stayed");
    let tl = timeline(&c, new_leader);
    c.etcd_member_mut(0).stop();
    assert_no_failover(&c, new_leader, tl, 2 * TTL, "an etcd member with TLS killed").await;

    // The etcd password reaches no log.
    for i in 0..3 {
        let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
        assert!(!log.is_empty(), "node {i} logged");
        assert!(!log.contains(ETCD_PASSWORD), "node {i}'s log contains etcd's password");
    }
}
