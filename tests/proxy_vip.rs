//! Story: a proxy tier with no single point of failure, as seed 001's Pgpool-II watchdog keeps
//! one (its `delegate_IP` held by one of several Pgpool-II hosts). Two members, etcd, two proxies
//! and a client each run on a host of their own on one bridge; both proxies share one
//! `proxy.vip` and listen on the same port, and elect its holder through an etcd lease.
//!
//! 1. One proxy's host has the address, alone; `list` and that proxy's admin port say so; the
//!    client connects to the address and reaches the primary through the proxy.
//! 2. The holder stopped cleanly (SIGTERM) gives the address up and releases its claim: the other
//!    proxy has it at once (the time is printed). The stopped proxy comes back and stands by.
//! 3. The holder cut off from etcd gives the address up before its lease could end, and the
//!    other proxy takes it. Sampled every 100 ms through steps 1 to 3, no two hosts held it.
//! 4. The holder killed (SIGKILL: it gives nothing up): the other proxy's claim goes through once
//!    the killed one's lease ends and it takes the address (the time is printed; ttl 10), and the
//!    client's new connections through the address are served. The killed proxy's host still
//!    has the address on its interface, since nothing ran to remove it; started again, that
//!    proxy removes it before claiming anything and stands by.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::cluster::{connect_from, Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::netns::{Direction, Host, INTERFACE, PREFIX_LEN};
use support::proxy::Proxy;

const TIMEOUT: Duration = Duration::from_secs(60);
const PROXIES: [&str; 2] = ["proxy0", "proxy1"];

struct Tier {
    vip: Ipv4Addr,
    port: u16,
    admin_port: u16,
    proxies: [Option<Proxy>; 2],
}

impl Tier {
    fn start_proxy(&mut self, c: &Cluster, i: usize) {
        let extra = format!("  vip:\n    ip: {}\n    netmask: {PREFIX_LEN}\n    interface: {INTERFACE}\n", self.vip);
        self.proxies[i] = Some(Proxy::start_on(c, host(c, i), PROXIES[i], self.port, self.admin_port, &extra));
    }

    fn proxy(&self, i: usize) -> &Proxy {
        self.proxies[i].as_ref().expect("the proxy runs")
    }
}

fn host(c: &Cluster, i: usize) -> &Host {
    c.net().host(PROXIES[i])
}

/// The proxy whose host alone has the address, once one does (`not`: other than that one).
fn wait_for_holder(c: &Cluster, vip: Ipv4Addr, not: Option<usize>) -> usize {
    let mut holder = None;
    let found = support::wait_until(TIMEOUT, Duration::from_millis(50), || {
        let holders = c.net().holders(vip);
        holder = (0..2).find(|&i| holders == [PROXIES[i]] && Some(i) != not);
        holder.is_some()
    });
    assert!(found, "no proxy alone has the address {vip}: {:?}", c.net().holders(vip));
    holder.unwrap()
}

/// Whether the client, connecting to the address, is served by the primary.
async fn served_through_vip(c: &Cluster, t: &Tier) -> Result<bool, String> {
    let db = connect_from(c.client().clone(), t.vip, t.port).await?;
    let row = db.query_one("SELECT NOT pg_is_in_recovery()", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The proxy's admin `/stats.json` `vip` object, read over the LAN from the test's host.
fn vip_stats(c: &Cluster, t: &Tier, i: usize) -> serde_json::Value {
    let body = support::client::http_request_at(
        host(c, i).addr,
        t.admin_port,
        "GET",
        "/stats.json",
        None,
        Duration::from_secs(5),
    )
    .expect("admin port")
    .body;
    serde_json::from_str::<serde_json::Value>(&body).expect("stats.json")["vip"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_one_address_and_it_survives_a_stop_a_cut_and_a_kill() {
    let c = Cluster::start(2, ClusterOptions::default().with_hosts(&PROXIES));
    wait_healthy(&c, Duration::from_secs(90)).expect("a leader");
    let vip = c.net().spare_addr();
    let mut t = Tier { vip, port: support::free_port(), admin_port: support::free_port(), proxies: [None, None] };
    t.start_proxy(&c, 0);
    t.start_proxy(&c, 1);
    let sampler = c.net().sample(vip);

    // 1. One proxy holds it; everyone can tell which; the client reaches the primary through it.
    let holder = wait_for_holder(&c, vip, None);
    let other = 1 - holder;
    assert_eq!(served_through_vip(&c, &t).await, Ok(true), "the client reaches the primary through the address");
    // The admin port tells once the announcements after taking it are sent.
    support::wait_until(TIMEOUT, Duration::from_millis(100), || vip_stats(&c, &t, holder)["held"] == true);
    let stats = vip_stats(&c, &t, holder);
    assert_eq!((stats["held"].as_bool(), stats["holder"].clone()), (Some(true), stats["me"].clone()), "{stats}");
    support::wait_until(TIMEOUT, Duration::from_millis(100), || vip_stats(&c, &t, other)["holder"].is_string());
    let standby = vip_stats(&c, &t, other);
    assert_eq!(standby["held"].as_bool(), Some(false), "{standby}");
    assert_eq!(standby["holder"], stats["me"], "the standby knows who holds it: {standby}");
    let list = c.rampart(["list", "-c", c.config_path(0).to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let me = stats["me"].as_str().unwrap();
    assert!(text.contains(&format!("Proxy virtual IP {vip}: held by proxy {me}")), "{text}");
    let metrics = support::client::http_request_at(
        host(&c, holder).addr,
        t.admin_port,
        "GET",
        "/metrics",
        None,
        Duration::from_secs(5),
    )
    .expect("metrics")
    .body;
    assert!(metrics.contains(&format!("rampart_proxy_vip_held{{address=\"{vip}\"}} 1")), "{metrics}");

    // 2. A clean stop hands it over at once.
    let stopping = Instant::now();
    t.proxy(holder).signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_for_holder(&c, vip, Some(holder)), other);
    println!("clean stop: the address on the other proxy after {:?}", stopping.elapsed());
    let mut stopped = t.proxies[holder].take().unwrap();
    assert!(stopped.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", stopped.log());
    assert!(stopped.log().contains("given up and released"), "{}", stopped.log());
    assert_eq!(served_through_vip(&c, &t).await, Ok(true));
    t.start_proxy(&c, holder);
    let holder = other;
    let other = 1 - holder;
    assert!(
        support::wait_until(TIMEOUT, Duration::from_millis(100), || vip_stats(&c, &t, other)["holder"].is_string()),
        "the restarted proxy stands by"
    );

    // 3. The holder cut off from etcd gives it up before its lease could end; the other takes it.
    let etcd = c.net().host("etcd").addr;
    let cut = Instant::now();
    c.net().cut(host(&c, holder), &[etcd], Direction::Both);
    assert_eq!(wait_for_holder(&c, vip, Some(holder)), other);
    println!("cut off from etcd: the address on the other proxy after {:?}", cut.elapsed());
    c.net().heal(host(&c, holder));
    assert!(t.proxy(holder).log().contains("giving it up before the lease could end"), "{}", t.proxy(holder).log());
    assert_eq!(served_through_vip(&c, &t).await, Ok(true));
    let doubles = sampler.double_holdings();
    assert!(doubles.is_empty(), "two hosts held the address at once: {doubles:?}");
    let holder = other;
    let other = 1 - holder;
    assert!(
        support::wait_until(TIMEOUT, Duration::from_millis(100), || vip_stats(&c, &t, other)["holder"].is_string()),
        "the healed proxy stands by"
    );

    // 4. The holder killed: the other takes over when the lease ends; new connections are served.
    let killed = Instant::now();
    t.proxies[holder].as_mut().unwrap().stop();
    let taken = support::wait_until(TIMEOUT, Duration::from_millis(50), || {
        c.net().holders(vip).contains(&PROXIES[other].to_string())
    });
    assert!(taken, "the address moved to the other proxy: {:?}", c.net().holders(vip));
    println!("holder killed: the address on the other proxy after {:?} (ttl 10)", killed.elapsed());
    let served = support::wait_until_async(TIMEOUT, Duration::from_millis(200), || async {
        served_through_vip(&c, &t).await == Ok(true)
    })
    .await;
    assert!(served, "the client's new connections through the address are served");
    assert!(c.net().holders(vip).contains(&PROXIES[holder].to_string()), "nothing removed the killed proxy's address");
    t.start_proxy(&c, holder);
    assert_eq!(wait_for_holder(&c, vip, None), other, "restarted, the killed proxy removed its leftover address");
    assert_eq!(served_through_vip(&c, &t).await, Ok(true));
    drop(t);
    drop(c);
}
