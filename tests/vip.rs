//! Story: one address that always reaches the primary, as keepalived and vip-manager give it
//! (seed 004), held by the agents themselves. Three members, etcd and a client each run in a
//! network namespace of their own on one bridge; every member's PostgreSQL listens on all its
//! addresses on the same port, so the virtual IP reaches whichever host has it.
//!
//! 1. The leader's host has the address, alone; the client connects to it and reaches the
//!    primary; `list` and `/patroni` say who has it.
//! 2. A planned switchover moves it to the candidate: the client's writes through the address
//!    stop for the handover (the window is printed) and go on on the new primary.
//! 3. The leader cut off from etcd gives the address up when it fences itself, before its lease
//!    could expire; another member takes the lock and the address. Sampled every 100 ms from the
//!    start of the story to its end (the plug pulled below excepted), no two hosts held it.
//! 4. The leader's plug pulled (its link down, its agent and PostgreSQL killed): the address is on
//!    the new leader (the time it took is printed) and the client's new connections reach it.
//!
//! Every member also has `if_up_cmd` and `if_down_cmd` beside its interface (seed 001's hooks for
//! an address a cloud moves): each records the call in one file all hosts share, as the cloud's
//! API would see them; up to the pulled plug, every take came after the last holder gave it up.
//! A cluster with the hooks alone (no interface) shows the same order on a switchover and a stop.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, ClusterOptions};
use support::config::NodeConfig;
use support::health::wait_healthy;
use support::netns::Direction;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The file the hooks of [`with_hooks`] record their calls in: in the cluster's directory, which
/// every host sees.
fn hooks_log(cfg: &NodeConfig) -> std::path::PathBuf {
    cfg.node_dir.parent().expect("a cluster directory").join("hooks.log")
}

/// Gives the member `if_up_cmd` and `if_down_cmd` that append `up|down <member> <address>` to
/// [`hooks_log`]; with `interface` they go beside the `vip` section the cluster has, without it
/// they are the only way the address moves (`ip` from a documentation range).
fn with_hooks(mut cfg: NodeConfig, interface: bool) -> NodeConfig {
    let log = hooks_log(&cfg);
    let hooks = format!(
        "  if_up_cmd: \"echo up {name} $_IP_$ >> {log}\"\n  if_down_cmd: \"echo down {name} $_IP_$ >> {log}\"\n",
        name = cfg.name,
        log = log.display()
    );
    if interface {
        let section = cfg.extra_yaml.find("vip:\n").expect("a vip section");
        let end = cfg.extra_yaml[section..].find("  interface: ").map(|i| section + i).expect("an interface");
        cfg.extra_yaml.insert_str(end, &hooks);
    } else {
        cfg.extra_yaml.push_str(&format!("vip:\n  ip: 192.0.2.10\n{hooks}"));
    }
    cfg
}

/// The hooks' calls so far, as (verb, member, address).
fn hook_calls(c: &Cluster) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(hooks_log(&c.node(0).config)).unwrap_or_default();
    text.lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "a hook line: {l:?}");
            (w[0].to_string(), w[1].to_string(), w[2].to_string())
        })
        .collect()
}

/// Asserts that in `calls` every `up` comes after the previous holder's `down` (the address never
/// had two holders as the hooks see it) and that every call named `address`; returns the
/// holders in turn.
fn assert_handed_over_in_order(calls: &[(String, String, String)], address: &str) -> Vec<String> {
    let mut holder: Option<&str> = None;
    let mut holders = Vec::new();
    for (verb, member, addr) in calls {
        assert_eq!(addr, address, "$_IP_$ is the address: {calls:?}");
        match (verb.as_str(), holder) {
            ("up", None) => {
                holder = Some(member);
                holders.push(member.clone());
            }
            ("down", Some(h)) if h == member => holder = None,
            _ => panic!("{verb} {member} while {holder:?} held the address: {calls:?}"),
        }
    }
    holders
}

/// The member whose host alone has the address, once one does.
fn wait_for_holder(c: &Cluster, not: Option<usize>) -> usize {
    let mut holder = None;
    let found = support::wait_until(TIMEOUT, Duration::from_millis(100), || {
        let holders = c.net().holders(c.vip());
        holder = (0..c.len()).find(|&i| holders == [c.host(i).label.clone()] && Some(i) != not);
        holder.is_some()
    });
    assert!(found, "no member alone has the address {}: {:?}", c.vip(), c.net().holders(c.vip()));
    holder.unwrap()
}

/// The member the client reached through the virtual IP (told by its data directory: every
/// server answers on the address it was reached at), and whether it is a primary.
async fn reached_through_vip(c: &Cluster) -> Result<(usize, bool), String> {
    let db = c.connect_from_client(c.vip(), c.vip_port()).await?;
    let row = db
        .query_one("SELECT current_setting('data_directory'), NOT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| e.to_string())?;
    let dir: String = row.get(0);
    let member = (0..c.len()).find(|&i| c.data_dir(i) == std::path::Path::new(&dir));
    Ok((member.ok_or_else(|| format!("no member has the data directory {dir}"))?, row.get(1)))
}

/// Writes through the virtual IP from the client's host until stopped, reconnecting after every
/// failure; records when each write was acknowledged.
struct Writer {
    acked: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A failing test stops the writes before its namespaces go.
impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Writer {
    async fn start(c: &Cluster) -> Writer {
        let db = c.connect_from_client(c.vip(), c.vip_port()).await.expect("the client reaches the address");
        db.batch_execute("CREATE TABLE IF NOT EXISTS vip_writes (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
            .await
            .unwrap();
        let (acked, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (client, vip, port) = (c.client().clone(), c.vip(), c.vip_port());
        let task = {
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut db = Some(db);
                while !stop.load(Ordering::Relaxed) {
                    if db.is_none() {
                        db = support::cluster::connect_from(client.clone(), vip, port).await.ok();
                    }
                    let ok = match &db {
                        Some(d) => d.batch_execute("INSERT INTO vip_writes DEFAULT VALUES").await.is_ok(),
                        None => false,
                    };
                    if ok {
                        acked.lock().unwrap().push(Instant::now());
                    } else {
                        db = None;
                    }
                    // About a hundred writes a second: the window is measured to 10 ms.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        Writer { acked, stop, task: Some(task) }
    }

    /// The longest time between two acknowledged writes after `since`.
    fn longest_gap_after(&self, since: Instant) -> Duration {
        let acked = self.acked.lock().unwrap();
        acked.windows(2).filter(|w| w[1] > since).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    fn acked_after(&self, t: Instant) -> bool {
        self.acked.lock().unwrap().iter().any(|a| *a > t)
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Pulls `leader`'s plug (its link down, its agent and PostgreSQL killed, as a host losing power
/// looks to the others) and waits until another member's host has the address and the client's
/// new connections reach the new primary through it; returns that member.
async fn pull_the_plug(c: &mut Cluster, leader: usize) -> usize {
    let pulled = Instant::now();
    c.net().link_down(c.host(leader));
    c.kill_agent(leader);
    c.kill_postgres(leader);
    // The pulled host keeps the address on its dead link: look for it elsewhere.
    let others: Vec<usize> = (0..c.len()).filter(|&i| i != leader).collect();
    let mut moved = None;
    let found = support::wait_until(TIMEOUT, Duration::from_millis(100), || {
        let holders = c.net().holders(c.vip());
        moved = others.iter().copied().find(|&i| holders.contains(&c.host(i).label));
        moved.is_some()
    });
    assert!(found, "the address moved off the pulled host");
    let moved = moved.unwrap();
    println!("plug pulled: the address on {} after {:?}", c.name(moved), pulled.elapsed());
    let reached = support::wait_until_async(TIMEOUT, Duration::from_millis(200), || async {
        reached_through_vip(c).await.ok() == Some((moved, true))
    })
    .await;
    assert!(reached, "the client's new connections reach the new primary through the address: {}", neighbours(c));
    moved
}

/// The client host's ARP cache, for a failure message.
fn neighbours(c: &Cluster) -> String {
    let ns = c.client().netns.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let out = std::process::Command::new("ip").args(["-n", &ns.unwrap_or_default(), "neigh"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_else(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_virtual_ip_follows_the_primary_through_a_switchover_a_cut_off_leader_and_a_pulled_plug() {
    let mut c = Cluster::start(3, ClusterOptions::default().with_vip().tweak(|_, cfg| with_hooks(cfg, true)));
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let first = leader;
    let sampler = c.net().sample(c.vip());

    // 1. The leader's host has it, alone; the client reaches the primary through it.
    assert_eq!(wait_for_holder(&c, None), leader, "the leader's host has the address");
    assert_eq!(reached_through_vip(&c).await.unwrap(), (leader, true));
    let patroni = c.get_json(leader, "/patroni").unwrap();
    assert_eq!(patroni["vip"], serde_json::json!({"address": c.vip().to_string(), "held": true}), "{patroni}");
    let list = c.rampart(["list", "-c", c.config_path(leader).to_str().unwrap(), "-f", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let shown: Vec<_> = rows.as_array().unwrap().iter().filter(|r| r["Virtual IP"].is_string()).collect();
    assert_eq!(shown.len(), 1, "{rows}");
    assert_eq!(shown[0]["Member"], c.name(leader), "{rows}");

    // 2. A switchover moves it; the client's writes pause for the handover only.
    let writer = Writer::start(&c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let candidate = (leader + 1) % 3;
    let asked = Instant::now();
    let r = c.request_switchover(leader, candidate, Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for_holder(&c, Some(leader)), candidate, "the address followed the switchover");
    let moved = Instant::now();
    assert!(
        support::wait_until(TIMEOUT, Duration::from_millis(100), || writer.acked_after(moved)),
        "writes through the address go on after the switchover ({} acknowledged); the client's ARP cache: {}",
        writer.acked.lock().unwrap().len(),
        neighbours(&c)
    );
    println!("switchover: longest write window through the virtual IP {:?}", writer.longest_gap_after(asked));
    writer.stop().await;
    assert_eq!(reached_through_vip(&c).await.unwrap(), (candidate, true));
    let leader = candidate;

    // 3. The leader cut off from etcd gives the address up before its lease could expire.
    let etcd = c.net().host("etcd").addr;
    let cut = Instant::now();
    c.net().cut(c.host(leader), &[etcd], Direction::Both);
    let next = wait_for_holder(&c, Some(leader));
    println!("cut off from etcd: the address on {} after {:?}", c.name(next), cut.elapsed());
    c.net().heal(c.host(leader));
    assert_eq!(reached_through_vip(&c).await.unwrap(), (next, true));
    let doubles = sampler.double_holdings();
    assert!(doubles.is_empty(), "two hosts held the address at once: {doubles:?}");
    assert!(!sampler.samples().is_empty());
    drop(sampler);
    let leader = next;
    // The hooks ran beside the interface, in the same order: taken only once given up. The up
    // command runs after the address is on the interface and announced: wait for it.
    let vip = c.vip().to_string();
    support::wait_until(TIMEOUT, Duration::from_millis(100), || {
        assert_handed_over_in_order(&hook_calls(&c), &vip).last().map(String::as_str) == Some(c.name(leader))
    });
    let holders = assert_handed_over_in_order(&hook_calls(&c), &vip);
    assert_eq!(holders.first().map(String::as_str), Some(c.name(first)), "{holders:?}");
    assert_eq!(holders.last().map(String::as_str), Some(c.name(leader)), "{holders:?}");

    // 4. The plug pulled: the address and the service move to another member.
    pull_the_plug(&mut c, leader).await;
}

/// Seed 004's cluster rebuilt on Rampart: two hosts, asynchronous replication, one address the
/// applications use (there keepalived's `virtual_ipaddress 192.168.12.23/24 dev eth0`, with a
/// notify script that promotes the standby). Rows written through the address survive the
/// primary's plug being pulled, and the address and the service move to the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_two_hosts_with_a_virtual_ip_survive_the_primarys_plug_pulled() {
    let mut c = Cluster::start(2, ClusterOptions::default().with_vip());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    assert_eq!(wait_for_holder(&c, None), leader, "the primary's host has the address");
    let db = c.connect_from_client(c.vip(), c.vip_port()).await.expect("the client reaches the address");
    db.batch_execute("CREATE TABLE seed004 (id int PRIMARY KEY); INSERT INTO seed004 SELECT generate_series(1, 100)")
        .await
        .unwrap();
    drop(db);
    let replica = 1 - leader;
    let replicated = support::wait_until_async(TIMEOUT, Duration::from_millis(200), || async {
        let Ok(db) = c.connect_superuser(replica).await else { return false };
        let n = db.query_one("SELECT count(*) FROM seed004", &[]).await.ok().map(|r| r.get::<_, i64>(0));
        n == Some(100)
    })
    .await;
    assert!(replicated, "the standby has the rows (replication is asynchronous: wait for it)");

    assert_eq!(pull_the_plug(&mut c, leader).await, replica);
    let db = c.connect_from_client(c.vip(), c.vip_port()).await.unwrap();
    let n: i64 = db.query_one("SELECT count(*) FROM seed004", &[]).await.unwrap().get(0);
    assert_eq!(n, 100, "every row is there through the address");
    db.batch_execute("INSERT INTO seed004 VALUES (101)").await.expect("the new primary takes writes");
}

/// Seed 001's hooks alone (`if_up_cmd`/`if_down_cmd`, no interface): the address lives elsewhere
/// (an Elastic IP, a route table, a DNS record), and the commands move it. The leader runs the
/// up command; a switchover runs the old leader's down command before the new leader's up; a
/// clean stop of the leader runs its down command. `/patroni` says who holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_alone_move_an_address_the_hosts_do_not_carry() {
    let mut c = Cluster::start(2, ClusterOptions::default().tweak(|_, cfg| with_hooks(cfg, false)));
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let called =
        |c: &Cluster, n: usize| support::wait_until(TIMEOUT, Duration::from_millis(100), || hook_calls(c).len() >= n);
    assert!(called(&c, 1), "the leader took the address: {:?}", hook_calls(&c));
    assert_eq!(assert_handed_over_in_order(&hook_calls(&c), "192.0.2.10"), [c.name(leader)]);
    let held = |c: &Cluster, i: usize| c.get_json(i, "/patroni").map(|p| p["vip"]["held"] == true).unwrap_or(false);
    assert!(held(&c, leader) && !held(&c, 1 - leader));

    let candidate = 1 - leader;
    let r = c.request_switchover(leader, candidate, Duration::from_secs(60));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(called(&c, 3), "the address moved with the switchover: {:?}", hook_calls(&c));
    let holders = assert_handed_over_in_order(&hook_calls(&c), "192.0.2.10");
    assert_eq!(holders, [c.name(leader), c.name(candidate)]);
    assert!(support::wait_until(TIMEOUT, Duration::from_millis(100), || held(&c, candidate) && !held(&c, leader)));

    assert!(c.stop_agent(candidate, Duration::from_secs(60)), "the leader's agent stops");
    let calls = hook_calls(&c);
    assert_eq!(calls.last().map(|(v, m, _)| (v.as_str(), m.as_str())), Some(("down", c.name(candidate))), "{calls:?}");
    assert_handed_over_in_order(&calls, "192.0.2.10");
}
