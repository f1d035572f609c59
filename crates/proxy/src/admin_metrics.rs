//! `GET /metrics` of the admin port: the proxy's counters in the Prometheus text format 0.0.4.
//!
//! Hand-written, as crates/api does for Patroni's metrics: there is nothing to register, every
//! value is read from one [`Snapshot`] per scrape, and the text format is a few lines of code.
//!
//! Invariants:
//! * every family has exactly one `# HELP` and one `# TYPE` line, before its samples, and every
//!   name starts with `rampart_proxy_`;
//! * label values (member names come from the DCS, i.e. from users) are escaped as the format
//!   requires, so any name yields valid lines;
//! * the hold histogram is cumulative and its `+Inf` bucket equals `_count`;
//! * `rampart_proxy_dcs_view_age_seconds` is `+Inf` before the first successful read of the
//!   cluster: the proxy has no view, which is worse than any old one, so an alert such as
//!   `age > ttl` fires instead of seeing nothing (an absent series would need `absent()`);
//! * the pool figures are those of the admin console's `SHOW POOLS` and `SHOW STATS`, from the
//!   same [`PoolsView`], so a scrape and the console never disagree on how they count.
//!
//! Names of the pool figures: `rampart_proxy_` followed by the name the PgBouncer exporter
//! (prometheus-community/pgbouncer_exporter) gives the same column without its `pgbouncer_`,
//! with its units (seconds, bytes) and its labels (`database`, `user`), plus Rampart's
//! `backend` (the member a pool's servers are on); each HELP text names the exporter's metric.
//! So `SHOW POOLS`' `cl_active` is `rampart_proxy_pools_client_active_connections` where the
//! exporter has `pgbouncer_pools_client_active_connections`, and `SHOW STATS`' `total_xact_count`
//! is `rampart_proxy_stats_sql_transactions_pooled_total`. Not the exporter's names themselves:
//! the invariant above keeps every series of the proxy in one namespace (one `{__name__=~}`
//! selector, no clash with a real PgBouncer scraped by the same Prometheus), and a dashboard or
//! alert written for the exporter needs only the prefix replaced (or one relabelling rule,
//! `rampart_proxy_(pools|stats)_(.*)` to `pgbouncer_$1_$2`). Columns Rampart does not have
//! (`sv_used`, `sv_tested`, cancel requests, averages) are not exported rather than shown as 0.

use std::fmt::Write;

use crate::admin_view::Overview;
use crate::clients::DbTotals;
use crate::pools_view::{PoolLine, PoolsView};
use crate::session::Port;
use crate::stats::{BackendSnapshot, Snapshot, HOLD_BUCKETS};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The exposition text being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample; `labels` are (name, unescaped value) pairs.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per backend and port.
    fn per_backend(&mut self, s: &Snapshot, name: &str, kind: &str, help: &str, value: fn(&BackendSnapshot) -> u64) {
        self.family(name, kind, help);
        for b in &s.backends {
            self.sample(name, &[("backend", &b.name), ("port", b.port.as_str())], value(b));
        }
    }
}

/// A pool figure: the family and its HELP text (PgBouncer's column, and the exporter's name).
type PoolFamily = (&'static str, &'static str, fn(&PoolLine) -> f64);

/// The `SHOW POOLS` columns, as gauges per database, user and backend.
const POOL_FAMILIES: [PoolFamily; 6] = [
    (
        "rampart_proxy_pools_client_active_connections",
        "Clients of the pool's database and user not waiting for a server (SHOW POOLS cl_active; \
         pgbouncer_exporter: pgbouncer_pools_client_active_connections).",
        |l| l.cl_active as f64,
    ),
    (
        "rampart_proxy_pools_client_waiting_connections",
        "Clients waiting for a server of the pool (SHOW POOLS cl_waiting; \
         pgbouncer_exporter: pgbouncer_pools_client_waiting_connections).",
        |l| l.cl_waiting as f64,
    ),
    (
        "rampart_proxy_pools_server_active_connections",
        "Server connections of the pool in use by a client (SHOW POOLS sv_active; \
         pgbouncer_exporter: pgbouncer_pools_server_active_connections).",
        |l| l.sv_active as f64,
    ),
    (
        "rampart_proxy_pools_server_idle_connections",
        "Server connections of the pool idle and ready for a client (SHOW POOLS sv_idle; \
         pgbouncer_exporter: pgbouncer_pools_server_idle_connections).",
        |l| l.sv_idle as f64,
    ),
    (
        "rampart_proxy_pools_server_login_connections",
        "Server connections of the pool being opened (SHOW POOLS sv_login; \
         pgbouncer_exporter: pgbouncer_pools_server_login_connections).",
        |l| l.sv_login as f64,
    ),
    (
        "rampart_proxy_pools_client_maxwait_seconds",
        "How long the pool's oldest waiting client has waited for a server (SHOW POOLS maxwait; \
         pgbouncer_exporter: pgbouncer_pools_client_maxwait_seconds).",
        |l| l.max_wait.as_secs_f64(),
    ),
];

/// A database's counter: the family, its HELP text and its value.
type StatsFamily = (&'static str, &'static str, fn(&DbTotals) -> f64);

/// The `SHOW STATS` totals, as counters per database.
const STATS_FAMILIES: [StatsFamily; 6] = [
    (
        "rampart_proxy_stats_sql_transactions_pooled_total",
        "Transactions pooled, per database (SHOW STATS total_xact_count; \
         pgbouncer_exporter: pgbouncer_stats_sql_transactions_pooled_total).",
        |t| t.xacts as f64,
    ),
    (
        "rampart_proxy_stats_queries_pooled_total",
        "Queries pooled, per database (SHOW STATS total_query_count; \
         pgbouncer_exporter: pgbouncer_stats_queries_pooled_total).",
        |t| t.queries as f64,
    ),
    (
        "rampart_proxy_stats_received_bytes_total",
        "Bytes received from pooled clients, per database (SHOW STATS total_received; \
         pgbouncer_exporter: pgbouncer_stats_received_bytes_total).",
        |t| t.received as f64,
    ),
    (
        "rampart_proxy_stats_sent_bytes_total",
        "Bytes sent to pooled clients, per database (SHOW STATS total_sent; \
         pgbouncer_exporter: pgbouncer_stats_sent_bytes_total).",
        |t| t.sent as f64,
    ),
    (
        "rampart_proxy_stats_server_in_transaction_seconds_total",
        "Seconds pooled clients held a server in a transaction, per database (SHOW STATS total_xact_time; \
         pgbouncer_exporter: pgbouncer_stats_server_in_transaction_seconds_total).",
        |t| t.xact_us as f64 / 1e6,
    ),
    (
        "rampart_proxy_stats_client_wait_seconds_total",
        "Seconds pooled clients waited for a server, per database (SHOW STATS total_wait_time; \
         pgbouncer_exporter: pgbouncer_stats_client_wait_seconds_total).",
        |t| t.wait_us as f64 / 1e6,
    ),
];

/// The pool and per-database families of `p`.
fn pools(out: &mut Out, p: &PoolsView) {
    for (name, help, value) in POOL_FAMILIES {
        out.family(name, "gauge", help);
        for l in &p.pools {
            let labels = [("database", l.database.as_str()), ("user", &l.user), ("backend", &l.backend)];
            out.sample(name, &labels, float(value(l)));
        }
    }
    for (name, help, value) in STATS_FAMILIES {
        out.family(name, "counter", help);
        for t in &p.stats {
            out.sample(name, &[("database", &t.database)], float(value(t)));
        }
    }
    let name = "rampart_proxy_pinned_clients_total";
    out.family(
        name,
        "counter",
        "Pooled clients pinned to their server for the rest of their session, by the session-level \
         feature they used (LISTEN, SET, PREPARE, WITH HOLD cursors, temporary objects, advisory locks).",
    );
    for (feature, n) in &p.pins {
        out.sample(name, &[("feature", feature.as_str())], float(*n as f64));
    }
}

/// A float as the text format wants it (`+Inf` for infinity).
fn float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        v.to_string()
    }
}

/// The read/write splitting's families, appended to `/metrics` when `proxy.load_balance` is on.
pub fn split_metrics_text(f: &crate::split::state::SplitFigures) -> String {
    let mut out = Out(String::with_capacity(1024));
    let sent = "rampart_proxy_split_statements_total";
    out.family(
        sent,
        "counter",
        "Statements (or extended-protocol pipelines) the read-write port's splitter sent, per backend.",
    );
    for (backend, n) in &f.per_backend {
        out.sample(sent, &[("backend", backend)], n);
    }
    let role = "rampart_proxy_split_statements_by_role_total";
    out.family(role, "counter", "Statements the splitter sent, to a replica or to the primary.");
    out.sample(role, &[("role", "replica")], f.to_replica);
    out.sample(role, &[("role", "primary")], f.to_primary);
    out.single(
        "rampart_proxy_split_reads_kept_on_primary_total",
        "counter",
        "Reads sent to the primary because no replica had replayed the session's last write.",
        f.reads_kept_on_primary,
    );
    out.single(
        "rampart_proxy_split_cache_hits_total",
        "counter",
        "Statements found classified in the cache.",
        f.cache.hits,
    );
    out.single(
        "rampart_proxy_split_cache_misses_total",
        "counter",
        "Statements parsed and classified.",
        f.cache.misses,
    );
    out.single(
        "rampart_proxy_split_parse_seconds_total",
        "counter",
        "Time spent parsing and classifying statements (the misses).",
        float(f.cache.parse_ns as f64 / 1e9),
    );
    out.single("rampart_proxy_split_cache_entries", "gauge", "Statements held in the cache.", f.cache.entries);
    out.0
}

/// The proxies' virtual address's families, appended to `/metrics` when `proxy.vip` is set.
pub fn vip_metrics_text(f: &crate::admin::VipFigures) -> String {
    let mut out = Out(String::with_capacity(512));
    let held = "rampart_proxy_vip_held";
    out.family(held, "gauge", "1 if this proxy's host has the proxies' virtual address now.");
    out.sample(held, &[("address", &f.address)], u8::from(f.held));
    let changes = "rampart_proxy_vip_changes_total";
    out.family(changes, "counter", "Times this proxy took or gave up the virtual address since it started.");
    out.sample(changes, &[("address", &f.address)], f.changes);
    out.0
}

/// The `/metrics` body for `s`, with the routes and view facts of `o` and the pools of `p`.
pub fn metrics_text(s: &Snapshot, o: &Overview, p: &PoolsView) -> String {
    let mut out = Out(String::with_capacity(4096));
    out.per_backend(s, "rampart_proxy_connections_active", "gauge", "Sessions open now, per backend and port.", |b| {
        b.active
    });
    out.per_backend(
        s,
        "rampart_proxy_connections_total",
        "counter",
        "Sessions ever connected, per backend and port.",
        |b| b.total,
    );
    out.per_backend(
        s,
        "rampart_proxy_bytes_to_server_total",
        "counter",
        "Bytes relayed from clients to the backend, per backend and port.",
        |b| b.bytes_to_server,
    );
    out.per_backend(
        s,
        "rampart_proxy_bytes_to_client_total",
        "counter",
        "Bytes relayed from the backend to clients, per backend and port.",
        |b| b.bytes_to_client,
    );

    let accepted = "rampart_proxy_client_connections_accepted_total";
    out.family(accepted, "counter", "Client connections accepted, per port.");
    out.sample(accepted, &[("port", Port::ReadWrite.as_str())], s.accepted_rw);
    out.sample(accepted, &[("port", Port::ReadOnly.as_str())], s.accepted_ro);

    let decisions = "rampart_proxy_routing_decisions_total";
    out.family(decisions, "counter", "Where new sessions were sent (or why not), per port and outcome.");
    for (port, decision, n) in &s.decisions {
        out.sample(decisions, &[("port", port.as_str()), ("outcome", decision.as_str())], n);
    }

    let hold = "rampart_proxy_hold_duration_seconds";
    out.family(hold, "histogram", "How long read-write clients waited for a primary (holds that ended).");
    let bucket = format!("{hold}_bucket");
    for (bound, n) in HOLD_BUCKETS.iter().zip(s.holds.buckets.iter()) {
        out.sample(&bucket, &[("le", &float(*bound))], n);
    }
    out.sample(&bucket, &[("le", "+Inf")], s.holds.count);
    out.sample(&format!("{hold}_sum"), &[], float(s.holds.sum_secs));
    out.sample(&format!("{hold}_count"), &[], s.holds.count);
    out.single(
        "rampart_proxy_hold_timeouts_total",
        "counter",
        "Holds that ended without a primary (the client got an error).",
        s.holds.timeouts,
    );
    out.single("rampart_proxy_clients_held", "gauge", "Read-write clients waiting for a primary now.", s.holds.waiting);

    out.single(
        "rampart_proxy_protocol_errors_total",
        "counter",
        "Connections closed for a protocol violation.",
        s.protocol_errors,
    );
    out.single(
        "rampart_proxy_fenced_sessions_total",
        "counter",
        "Read-write sessions closed (57P01) because the leader changed.",
        s.fenced,
    );
    out.single(
        "rampart_proxy_cancels_forwarded_total",
        "counter",
        "Cancel requests forwarded to a backend.",
        s.cancels,
    );
    let tls = "rampart_proxy_tls_handshakes_total";
    out.family(tls, "counter", "TLS handshakes with clients, per result.");
    out.sample(tls, &[("result", "ok")], s.tls_ok);
    out.sample(tls, &[("result", "failed")], s.tls_failed);

    out.single(
        "rampart_proxy_dcs_view_age_seconds",
        "gauge",
        "Age of the last cluster view read from the DCS; +Inf before the first read.",
        float(o.view_age.map_or(f64::INFINITY, |a| a.as_secs_f64())),
    );
    out.single(
        "rampart_proxy_dcs_ttl_seconds",
        "gauge",
        "The ttl the view's age is judged against: older views route no primary.",
        o.ttl.as_secs(),
    );
    out.single(
        "rampart_proxy_primary_route",
        "gauge",
        "1 if read-write clients are routed to a primary now, 0 if they are held.",
        u8::from(o.primary_route.is_some()),
    );
    out.single("rampart_proxy_replica_routes", "gauge", "Replicas read-only clients are routed to now.", {
        o.replica_routes.len()
    });
    out.single(
        "rampart_proxy_uptime_seconds",
        "gauge",
        "Seconds since the proxy started.",
        float(s.uptime.as_secs_f64()),
    );
    pools(&mut out, p);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_view::overview;
    use crate::admin_view::tests::{pools, snapshot, POLICY};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    /// Parses the text strictly: HELP then TYPE before each family's samples, known types, every
    /// sample `name[{labels}] value` with a numeric value and belonging to a typed family.
    /// Returns `name{labels}` (labels as written) -> value.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_string()), "second HELP for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(matches!(kind, "gauge" | "counter" | "histogram"), "{line}");
                assert!(typed.insert(name.to_string(), kind.to_string()).is_none(), "second TYPE: {line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("rampart_proxy_"), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.get(*f).is_some_and(|k| k == "histogram")))
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample without TYPE: {line}");
            let v: f64 =
                if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap_or_else(|_| panic!("{line}")) };
            assert!(samples.insert(series.to_string(), v).is_none(), "duplicate series {series}");
        }
        samples
    }

    /// The text for the fixture snapshot read `age` ago, or with no view at all (and then, as
    /// the follower publishes before its first read, no routes).
    fn render(age: Option<Duration>) -> String {
        let (mut snap, mut routes) = snapshot(age.unwrap_or_default());
        if age.is_none() {
            snap.view = None;
            routes = Default::default();
        }
        let o = overview("pg", &snap, &routes, POLICY);
        metrics_text(&snap, &o, &pools())
    }

    #[test]
    fn families_and_values() {
        let m = parse(&render(Some(Duration::from_millis(1500))));
        assert_eq!(m[r#"rampart_proxy_connections_active{backend="a",port="rw"}"#], 1.0);
        assert_eq!(m[r#"rampart_proxy_connections_active{backend="b",port="ro"}"#], 1.0);
        assert_eq!(m[r#"rampart_proxy_connections_total{backend="a",port="rw"}"#], 4.0);
        assert_eq!(m[r#"rampart_proxy_bytes_to_client_total{backend="b",port="ro"}"#], 500.0);
        assert_eq!(m[r#"rampart_proxy_client_connections_accepted_total{port="ro"}"#], 3.0);
        assert_eq!(m[r#"rampart_proxy_routing_decisions_total{port="rw",outcome="refused"}"#], 1.0);
        assert_eq!(m[r#"rampart_proxy_tls_handshakes_total{result="failed"}"#], 9.0);
        assert_eq!(m["rampart_proxy_protocol_errors_total"], 5.0);
        assert_eq!(m["rampart_proxy_fenced_sessions_total"], 6.0);
        assert_eq!(m["rampart_proxy_cancels_forwarded_total"], 7.0);
        assert_eq!(m["rampart_proxy_hold_timeouts_total"], 1.0);
        assert_eq!(m["rampart_proxy_clients_held"], 1.0);
        assert_eq!(m["rampart_proxy_dcs_view_age_seconds"], 1.5);
        assert_eq!(m["rampart_proxy_dcs_ttl_seconds"], 30.0);
        assert_eq!(m["rampart_proxy_primary_route"], 1.0);
        assert_eq!(m["rampart_proxy_replica_routes"], 2.0);
        assert_eq!(m["rampart_proxy_uptime_seconds"], 90.0);
    }

    #[test]
    fn pool_figures_follow_the_pgbouncer_exporter() {
        let text = render(Some(Duration::ZERO));
        let m = parse(&text);
        let pool = |family: &str, database: &str, user: &str, backend: &str| {
            m[&format!("rampart_proxy_pools_{family}{{database=\"{database}\",user=\"{user}\",backend=\"{backend}\"}}")]
        };
        assert_eq!(pool("client_active_connections", "app", "app", "a"), 5.0);
        assert_eq!(pool("client_waiting_connections", "app", "app", "a"), 2.0);
        assert_eq!(pool("server_active_connections", "app", "app", "a"), 4.0);
        assert_eq!(pool("server_idle_connections", "postgres", "app", "a"), 2.0);
        assert_eq!(pool("server_login_connections", "app", "app", "a"), 1.0);
        assert_eq!(pool("client_maxwait_seconds", "app", "app", "a"), 1.5);
        assert_eq!(pool("server_active_connections", "postgres", "u<\\\"&'>\\\\\\n", "b"), 1.0, "escaped user");
        let stats =
            |family: &str, database: &str| m[&format!("rampart_proxy_stats_{family}{{database=\"{database}\"}}")];
        assert_eq!(stats("sql_transactions_pooled_total", "app"), 100.0);
        assert_eq!(stats("queries_pooled_total", "app"), 250.0);
        assert_eq!(stats("received_bytes_total", "app"), 4096.0);
        assert_eq!(stats("sent_bytes_total", "app"), 8192.0);
        assert_eq!(stats("server_in_transaction_seconds_total", "app"), 2.5, "microseconds become seconds");
        assert_eq!(stats("client_wait_seconds_total", "app"), 0.5);
        assert_eq!(stats("sql_transactions_pooled_total", "postgres"), 3.0);
        assert_eq!(m["rampart_proxy_pinned_clients_total{feature=\"listen\"}"], 2.0, "pins by feature");
        // Each family says which of the exporter's metrics it is, and has the exporter's type.
        for (name, kind) in
            POOL_FAMILIES.iter().map(|f| (f.0, "gauge")).chain(STATS_FAMILIES.iter().map(|f| (f.0, "counter")))
        {
            let exporter = name.replacen("rampart_proxy_", "pgbouncer_", 1);
            let help = text.lines().find(|l| l.starts_with(&format!("# HELP {name} "))).expect("HELP");
            assert!(help.contains(&format!("pgbouncer_exporter: {exporter})")), "{help}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
    }

    #[test]
    fn no_pools_yet() {
        let (snap, routes) = snapshot(Duration::ZERO);
        let text = metrics_text(&snap, &overview("pg", &snap, &routes, POLICY), &PoolsView::default());
        let m = parse(&text);
        assert!(text.contains("# TYPE rampart_proxy_pools_client_active_connections gauge\n"));
        assert!(!m.keys().any(|k| k.starts_with("rampart_proxy_pools_") || k.starts_with("rampart_proxy_stats_")));
    }

    #[test]
    fn hold_histogram_is_cumulative_and_ends_with_count() {
        let m = parse(&render(Some(Duration::ZERO)));
        let mut last = 0.0;
        for bound in HOLD_BUCKETS {
            let v = m[&format!("rampart_proxy_hold_duration_seconds_bucket{{le=\"{bound}\"}}")];
            assert!(v >= last, "bucket {bound} smaller than the one before");
            last = v;
        }
        let inf = m[r#"rampart_proxy_hold_duration_seconds_bucket{le="+Inf"}"#];
        assert!(inf >= last);
        assert_eq!(inf, m["rampart_proxy_hold_duration_seconds_count"]);
        assert_eq!(m["rampart_proxy_hold_duration_seconds_sum"], 40.3);
        assert!(m.contains_key(r#"rampart_proxy_hold_duration_seconds_bucket{le="0.25"}"#));
        assert!(m.contains_key(r#"rampart_proxy_hold_duration_seconds_bucket{le="60"}"#));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let text = render(Some(Duration::ZERO));
        let line = r#"rampart_proxy_connections_total{backend="c<\"&'>\\\n",port="ro"} 1"#;
        assert!(text.lines().any(|l| l == line), "{text}");
        // The raw line feed of the name never splits a sample over two lines.
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("rampart_proxy_")));
    }

    #[test]
    fn no_view_yet() {
        let m = parse(&render(None));
        assert_eq!(m["rampart_proxy_dcs_view_age_seconds"], f64::INFINITY);
        assert_eq!(m["rampart_proxy_dcs_ttl_seconds"], 30.0, "the configured default");
        assert_eq!((m["rampart_proxy_primary_route"], m["rampart_proxy_replica_routes"]), (0.0, 0.0));
        // Sessions opened before still show.
        assert_eq!(m[r#"rampart_proxy_connections_active{backend="a",port="rw"}"#], 1.0);
    }

    #[test]
    fn the_virtual_address_is_one_gauge_and_one_counter_per_address() {
        let f = crate::admin::VipFigures {
            address: "10.0.0.5".into(),
            held: true,
            changes: 3,
            holder: Some("h-1".into()),
            me: "h-1".into(),
        };
        let m = parse(&vip_metrics_text(&f));
        assert_eq!(m["rampart_proxy_vip_held{address=\"10.0.0.5\"}"], 1.0);
        assert_eq!(m["rampart_proxy_vip_changes_total{address=\"10.0.0.5\"}"], 3.0);
        assert_eq!(m.len(), 2);
    }
}
