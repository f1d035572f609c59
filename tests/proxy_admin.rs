//! The admin port of `rampart proxy` (`proxy.listen_admin`) on a real three-node cluster:
//! `/metrics` and `/stats.json` show open sessions on the backends they really reached, the
//! leader and every member; `/stats`, rendered by headless Chromium as a person would see it,
//! lists every member and marks the leader as the primary.
//!
//! Needs Debian's `chromium` (scripts/setup.sh installs it); without it the test fails saying so.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::browser;
use support::cluster::{Cluster, ClusterOptions};
use support::health::wait_healthy;
use support::http_request;
use support::proxy::Proxy;
use tokio_postgres::Client;

/// `(pg_is_in_recovery(), inet_server_port())` of a session.
async fn where_am_i(db: &Client) -> (bool, u16) {
    let row = db.query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[]).await.expect("where am i");
    (row.get(0), row.get::<_, i32>(1) as u16)
}

async fn connect(port: u16) -> Client {
    support::connect_superuser(port).await.unwrap_or_else(|e| panic!("connect through the proxy on {port}: {e}"))
}

/// `/metrics` as `series -> value` (comments skipped), after checking status and content type.
fn metrics(admin: u16) -> BTreeMap<String, f64> {
    let r = http_request(admin, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct}");
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {l:?}"));
            let value = if value == "+Inf" { f64::INFINITY } else { value.parse().expect("numeric sample") };
            (series.to_string(), value)
        })
        .collect()
}

fn active(m: &BTreeMap<String, f64>, backend: &str, port: &str) -> f64 {
    m.get(&format!("rampart_proxy_connections_active{{backend=\"{backend}\",port=\"{port}\"}}")).copied().unwrap_or(0.0)
}

/// The `<tr>` element of the member named `name` in the dumped DOM.
fn member_row<'a>(dom: &'a str, name: &str) -> &'a str {
    let at = dom.find(&format!("data-member=\"{name}\"")).unwrap_or_else(|| panic!("no row for {name}:\n{dom}"));
    let start = dom[..at].rfind("<tr").expect("row start");
    let end = start + dom[start..].find("</tr>").expect("row end");
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_shows_sessions_members_and_the_leader() {
    // Fail before starting a cluster when the browser is missing.
    browser::chromium_bin();
    let c = Cluster::start(3, ClusterOptions::default());
    let leader = wait_healthy(&c, Duration::from_secs(90)).expect("healthy cluster");
    let proxy = Proxy::start_with_admin(&c, "");
    let admin = proxy.admin_port.expect("started with an admin port");
    let names: Vec<String> = (0..c.len()).map(|i| c.name(i).to_string()).collect();
    let leader_name = c.name(leader).to_string();

    // One read-write session (on the leader) and one read-only session on a replica. Until the
    // proxy has seen the replicas streaming, read-only clients fall back to the primary: retry.
    let rw = connect(proxy.rw_port).await;
    assert_eq!(where_am_i(&rw).await, (false, c.pg_port(leader)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ro, replica) = loop {
        let ro = connect(proxy.ro_port).await;
        let (in_recovery, port) = where_am_i(&ro).await;
        if in_recovery {
            let i = (0..c.len()).find(|&i| c.pg_port(i) == port).expect("a member's port");
            break (ro, c.name(i).to_string());
        }
        drop(ro);
        assert!(Instant::now() < deadline, "no read-only session reached a replica");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(replica, leader_name);

    // /metrics: exactly these two sessions are open (sessions closed above end asynchronously,
    // hence the wait), each on the backend it reached; there is a primary route.
    let mut last = BTreeMap::new();
    let settled = support::wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        last = metrics(admin);
        let total: f64 =
            last.iter().filter(|(k, _)| k.starts_with("rampart_proxy_connections_active{")).map(|(_, v)| v).sum();
        active(&last, &leader_name, "rw") == 1.0 && active(&last, &replica, "ro") == 1.0 && total == 2.0
    });
    assert!(settled, "active-connection gauges do not show the two sessions: {last:#?}");
    assert_eq!(last["rampart_proxy_primary_route"], 1.0);
    assert!(last["rampart_proxy_replica_routes"] >= 1.0);
    assert!(last["rampart_proxy_dcs_view_age_seconds"] < 5.0, "{last:#?}");
    assert!(last.contains_key("rampart_proxy_hold_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(last[r#"rampart_proxy_routing_decisions_total{port="rw",outcome="primary"}"#] >= 1.0);

    // /stats.json: the leader, every member, and where the sessions are.
    let r = http_request(admin, "GET", "/stats.json", None).expect("GET /stats.json");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json().expect("JSON body");
    assert_eq!(v["leader"], leader_name.as_str(), "{v:#}");
    assert_eq!(v["routes"]["primary"], leader_name.as_str(), "{v:#}");
    assert_eq!(v["view"]["freshness"], "fresh", "{v:#}");
    assert_eq!(v["scope"], c.node(0).config.scope.as_str(), "{v:#}");
    let members = v["members"].as_array().expect("members");
    let mut listed: Vec<&str> = members.iter().map(|m| m["name"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected, "{v:#}");
    let member = |name: &str| members.iter().find(|m| m["name"] == name).unwrap();
    let l = member(&leader_name);
    assert_eq!(
        (l["role"].as_str(), l["leader"].as_bool(), l["rw_route"].as_bool()),
        (Some("primary"), Some(true), Some(true))
    );
    assert_eq!(l["connections"]["rw"], 1, "{l:#}");
    assert_eq!(l["address"], format!("127.0.0.1:{}", c.pg_port(leader)).as_str());
    let rep = member(&replica);
    assert_eq!((rep["role"].as_str(), rep["ro_route"].as_bool()), (Some("replica"), Some(true)), "{rep:#}");
    assert_eq!(rep["connections"]["ro"], 1, "{rep:#}");
    assert!(rep["lag_bytes"].is_u64(), "{rep:#}");

    // Only GET, only the three pages.
    assert_eq!(http_request(admin, "POST", "/stats.json", Some("{}")).unwrap().status, 405);
    assert_eq!(http_request(admin, "GET", "/nope", None).unwrap().status, 404);

    // /stats as a person sees it: Chromium loads and renders the page; its DOM lists every
    // member and marks the leader's row as the primary.
    let url = format!("http://127.0.0.1:{admin}/stats");
    let dir = c.dir().to_path_buf();
    let dom = tokio::task::spawn_blocking(move || browser::dump_dom(&url, &dir, Duration::from_secs(60)))
        .await
        .expect("chromium thread");
    for name in &names {
        let row = member_row(&dom, name);
        assert!(row.contains(&format!("<td class=\"name\">{name}")), "{row}");
    }
    let row = member_row(&dom, &leader_name);
    assert!(row.contains("class=\"member leader\"") && row.contains("<td class=\"role\">primary</td>"), "{row}");
    assert!(row.contains("yes (rw)"), "{row}");
    assert!(member_row(&dom, &replica).contains("yes (ro)"), "{dom}");
    assert!(dom.contains(&format!("<dd id=\"leader\">{leader_name}</dd>")), "{dom}");
    assert!(!dom.contains("id=\"no-primary\"") && !dom.contains("id=\"stale-view\""), "{dom}");

    drop((rw, ro));
}
