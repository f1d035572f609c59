//! `GET /stats` of the admin port: one self-contained HTML page a person reads at a glance, in
//! the spirit of HAProxy's stats page: who leads, where clients go, what is wrong.
//!
//! No external assets and no script: inline CSS, and `<meta http-equiv="refresh">` reloads it
//! every two seconds, so the page works under a `default-src 'none'` content security policy.
//!
//! Invariants:
//! * every text that comes from the DCS, the configuration or clients (member names, roles,
//!   states, addresses, the scope, pooled databases and users) goes through [`escape`]: member
//!   names and the names clients log in with are user input;
//! * a missing primary route and a stale (or missing) DCS view are stated in a banner at the top,
//!   never only implied by an empty cell.

use std::fmt::Write;
use std::time::Duration;

use crate::admin_view::{Freshness, MemberRow, Overview};
use crate::pools_view::{PoolLine, PoolsView};
use crate::session::Port;
use crate::split::state::SplitFigures;
use crate::stats::{Snapshot, HOLD_BUCKETS};

/// Content type of the page.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// Seconds between two automatic reloads of the page.
const REFRESH_SECS: u32 = 2;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:.2em 0}h1 .scope{color:#555;font-weight:normal}\
h2{font-size:1.1em;margin:1.2em 0 .4em}\
dl.facts{display:flex;flex-wrap:wrap;gap:.3em 2em;margin:.4em 0}\
dl.facts div{display:flex;gap:.5em}dt{color:#666}dd{margin:0;font-weight:600}\
.banner{padding:.6em 1em;margin:.6em 0;border-radius:4px;font-weight:600}\
.alert{background:#fde2e1;border:1px solid #d9534f;color:#8a1f1c}\
.warn{background:#fff4d6;border:1px solid #e0a800;color:#6b5200}\
.ok{background:#e3f4e1;border:1px solid #5cb85c;color:#22572a}\
table{border-collapse:collapse;background:#fff;margin-bottom:.5em}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#eee;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
tr.leader td{background:#dff0d8;font-weight:600}\
tr.gone td{color:#888;font-style:italic}\
.yes{color:#22572a;font-weight:600}.no{color:#999}\
.badge{display:inline-block;padding:0 .4em;margin-left:.4em;border-radius:3px;background:#3c763d;color:#fff;font-size:.8em}\
footer{margin-top:1.5em;color:#777;font-size:.9em}";

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1536` -> `1.5 KiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `0.4 s`, `42 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..10 => format!("{:.1} s", d.as_secs_f64()),
        10..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

fn yes_no(on: bool, yes: &str) -> String {
    if on {
        format!("<span class=\"yes\">{yes}</span>")
    } else {
        "<span class=\"no\">no</span>".into()
    }
}

/// The `/stats` page; `split` when the read-write port splits reads from writes.
pub fn stats_html(s: &Snapshot, o: &Overview, p: &PoolsView, split: Option<&SplitFigures>) -> String {
    let mut h = String::with_capacity(8192);
    let scope = escape(&o.scope);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>Rampart proxy: {scope}</title><style>{STYLE}</style></head><body>\n"
    );
    header(&mut h, s, o);
    banners(&mut h, o);
    members(&mut h, o);
    pools(&mut h, p);
    if let Some(f) = split {
        splitting(&mut h, f);
    }
    counters(&mut h, s);
    let _ = write!(
        h,
        "<footer>Reloads every {REFRESH_SECS} s. Also as <a href=\"/metrics\">/metrics</a> (Prometheus) and \
         <a href=\"/stats.json\">/stats.json</a>.</footer>\n</body></html>\n"
    );
    h
}

fn header(h: &mut String, s: &Snapshot, o: &Overview) {
    let leader = o.leader.as_deref().map(escape).unwrap_or_else(|| "none".into());
    let rw = o.primary_route.as_deref().map(escape).unwrap_or_else(|| "none (clients held)".into());
    let ro = if o.replica_routes.is_empty() {
        "none".to_string()
    } else {
        o.replica_routes.iter().map(|n| escape(n)).collect::<Vec<_>>().join(", ")
    };
    let age = o.view_age.map(duration).unwrap_or_else(|| "no view yet".into());
    let _ = writeln!(
        h,
        "<header><h1>Rampart proxy <span class=\"scope\">scope <span id=\"scope\">{}</span></span></h1>\
         <dl class=\"facts\">\
         <div><dt>Leader</dt><dd id=\"leader\">{leader}</dd></div>\
         <div><dt>Read-write to</dt><dd id=\"rw-route\">{rw}</dd></div>\
         <div><dt>Read-only to</dt><dd id=\"ro-routes\">{ro}</dd></div>\
         <div><dt>DCS view age</dt><dd id=\"view-age\">{age} (ttl {} s)</dd></div>\
         <div><dt>Uptime</dt><dd>{}</dd></div></dl></header>",
        escape(&o.scope),
        o.ttl.as_secs(),
        duration(s.uptime),
    );
}

fn banners(h: &mut String, o: &Overview) {
    let ttl = o.ttl.as_secs();
    let mut banner = |class: &str, id: &str, text: String| {
        let _ = writeln!(h, "<div class=\"banner {class}\" id=\"{id}\">{text}</div>");
    };
    match (o.freshness, o.view_age) {
        (Freshness::NoView, _) => banner(
            "alert",
            "no-view",
            "No view of the cluster yet: the DCS has not been read successfully, nothing is routed.".into(),
        ),
        (Freshness::Stale, Some(age)) => banner(
            "alert",
            "stale-view",
            format!(
                "The DCS view is stale: last read {} ago, more than the ttl of {ttl} s. The leader's lease may \
                 have expired, so no client is sent to a primary (fail closed).",
                duration(age)
            ),
        ),
        (Freshness::Lagging, Some(age)) => banner(
            "warn",
            "lagging-view",
            format!(
                "Reading the DCS is failing: the view is {} old. Routes stand until it is {ttl} s old.",
                duration(age)
            ),
        ),
        _ => {}
    }
    if o.primary_route.is_none() {
        banner(
            "alert",
            "no-primary",
            "No primary route: read-write clients are held until a primary appears or their hold times out.".into(),
        );
    } else if o.freshness == Freshness::Fresh {
        banner("ok", "healthy", "Read-write clients are routed to the primary.".into());
    }
}

fn members(h: &mut String, o: &Overview) {
    h.push_str(
        "<h2>Members</h2>\n<table id=\"members\"><thead><tr><th>Member</th><th>Role</th><th>State</th>\
         <th>TL</th><th>Lag</th><th>Address</th><th>Tags</th><th>Routed</th><th>Conns rw</th>\
         <th>Conns ro</th><th>Sessions ever</th><th>Bytes from clients</th><th>Bytes to clients</th></tr></thead><tbody>\n",
    );
    if o.members.is_empty() {
        h.push_str("<tr><td colspan=\"13\">No members known.</td></tr>\n");
    }
    for m in &o.members {
        member_row(h, m);
    }
    h.push_str("</tbody></table>\n");
}

fn member_row(h: &mut String, m: &MemberRow) {
    let class = match (m.leader, m.in_view) {
        (true, _) => "member leader",
        (false, false) => "member gone",
        (false, true) => "member",
    };
    let name = escape(&m.name);
    let badge = if m.leader { "<span class=\"badge\">leader</span>" } else { "" };
    let mut tags = Vec::new();
    if m.nofailover {
        tags.push("nofailover");
    }
    if m.noloadbalance {
        tags.push("noloadbalance");
    }
    let routed = if m.rw_route {
        yes_no(true, "yes (rw)")
    } else if m.ro_route {
        yes_no(true, "yes (ro)")
    } else {
        yes_no(false, "")
    };
    let role = if m.in_view { escape(&m.role) } else { "not in the DCS view".into() };
    let dash = || "-".to_string();
    let _ = writeln!(
        h,
        "<tr class=\"{class}\" data-member=\"{name}\"><td class=\"name\">{name}{badge}</td>\
         <td class=\"role\">{role}</td><td class=\"state\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td>{}</td><td>{}</td><td class=\"routed\">{routed}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        escape(&m.state),
        m.timeline.map(|t| t.to_string()).unwrap_or_else(dash),
        m.lag.map(bytes).unwrap_or_else(dash),
        m.address.as_deref().map(escape).unwrap_or_else(dash),
        if tags.is_empty() { dash() } else { tags.join(" ") },
        m.active_rw,
        m.active_ro,
        m.total,
        bytes(m.bytes_to_server),
        bytes(m.bytes_to_client),
    );
}

fn pools(h: &mut String, p: &PoolsView) {
    h.push_str(
        "<h2>Pools</h2>\n<table id=\"pools\"><thead><tr><th>Database</th><th>User</th><th>Backend</th>\
         <th>Clients active</th><th>Clients waiting</th><th>Servers active</th><th>Servers idle</th>\
         <th>Servers logging in</th><th>Max wait</th></tr></thead><tbody>\n",
    );
    if p.pools.is_empty() {
        h.push_str(
            "<tr><td colspan=\"9\">No pools: nothing is pooled by transaction, or no pooled client came yet.</td></tr>\n",
        );
    }
    for l in &p.pools {
        pool_row(h, l);
    }
    h.push_str(
        "</tbody></table>\n<table id=\"pool-stats\"><thead><tr><th>Database</th><th>Transactions</th>\
         <th>Queries</th><th>Bytes from clients</th><th>Bytes to clients</th><th>Time in transactions</th>\
         <th>Time waiting for a server</th></tr></thead><tbody>\n",
    );
    if p.stats.is_empty() {
        h.push_str("<tr><td colspan=\"7\">None yet.</td></tr>\n");
    }
    for t in &p.stats {
        let database = escape(&t.database);
        let _ = writeln!(
            h,
            "<tr data-database=\"{database}\"><td>{database}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.xacts,
            t.queries,
            bytes(t.received),
            bytes(t.sent),
            duration(Duration::from_micros(t.xact_us)),
            duration(Duration::from_micros(t.wait_us)),
        );
    }
    h.push_str("</tbody></table>\n");
}

fn pool_row(h: &mut String, l: &PoolLine) {
    let (database, user, backend) = (escape(&l.database), escape(&l.user), escape(&l.backend));
    let (class, note) = if l.retired { ("pool gone", " (no longer a route)") } else { ("pool", "") };
    let _ = writeln!(
        h,
        "<tr class=\"{class}\" data-database=\"{database}\" data-user=\"{user}\" data-backend=\"{backend}\">\
         <td>{database}</td><td>{user}</td><td>{backend}{note}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
        l.cl_active,
        l.cl_waiting,
        l.sv_active,
        l.sv_idle,
        l.sv_login,
        duration(l.max_wait),
    );
}

fn splitting(h: &mut String, f: &SplitFigures) {
    let _ = write!(
        h,
        "<h2>Read/write splitting</h2>\n<table id=\"split\"><tbody>\
         <tr><th>Statements to replicas</th><td class=\"n\">{}</td></tr>\
         <tr><th>Statements to the primary</th><td class=\"n\">{}</td></tr>\
         <tr><th>Reads kept on the primary (read-your-writes)</th><td class=\"n\">{}</td></tr>\
         <tr><th>Statement cache: hits, misses, entries</th><td class=\"n\">{}, {}, {}</td></tr>\
         </tbody></table>\n<table id=\"split-backends\"><thead><tr><th>Backend</th><th>Statements</th></tr></thead><tbody>\n",
        f.to_replica, f.to_primary, f.reads_kept_on_primary, f.cache.hits, f.cache.misses, f.cache.entries,
    );
    if f.per_backend.is_empty() {
        h.push_str("<tr><td colspan=\"2\">None yet.</td></tr>\n");
    }
    for (addr, n) in &f.per_backend {
        let addr = escape(addr);
        let _ = writeln!(h, "<tr data-backend=\"{addr}\"><td>{addr}</td><td class=\"n\">{n}</td></tr>");
    }
    h.push_str("</tbody></table>\n");
}

fn counters(h: &mut String, s: &Snapshot) {
    h.push_str("<h2>Routing decisions</h2>\n<table id=\"decisions\"><thead><tr><th>Port</th><th>Outcome</th><th>Sessions</th></tr></thead><tbody>\n");
    if s.decisions.is_empty() {
        h.push_str("<tr><td colspan=\"3\">None yet.</td></tr>\n");
    }
    for (port, decision, n) in &s.decisions {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td></tr>",
            port_name(*port),
            decision.as_str().replace('_', " ")
        );
    }
    h.push_str("</tbody></table>\n");

    let holds = &s.holds;
    let mean =
        if holds.count > 0 { Duration::from_secs_f64(holds.sum_secs / holds.count as f64) } else { Duration::ZERO };
    let _ = write!(
        h,
        "<h2>Holds (read-write clients waiting for a primary)</h2>\n<table id=\"holds\"><tbody>\
         <tr><th>Held now</th><td class=\"n\">{}</td></tr><tr><th>Ended</th><td class=\"n\">{}</td></tr>\
         <tr><th>Timed out</th><td class=\"n\">{}</td></tr><tr><th>Mean wait</th><td class=\"n\">{}</td></tr>\
         </tbody></table>\n<table id=\"hold-buckets\"><thead><tr><th>Waited at most</th>",
        holds.waiting,
        holds.count,
        holds.timeouts,
        duration(mean),
    );
    for bound in HOLD_BUCKETS {
        let _ = write!(h, "<th>{bound} s</th>");
    }
    h.push_str("<th>any</th></tr></thead><tbody><tr><th>Holds</th>");
    for n in holds.buckets {
        let _ = write!(h, "<td class=\"n\">{n}</td>");
    }
    let _ = writeln!(h, "<td class=\"n\">{}</td></tr></tbody></table>", holds.count);

    let _ = writeln!(
        h,
        "<h2>Connections and errors</h2>\n<table id=\"events\"><tbody>\
         <tr><th>Accepted read-write</th><td class=\"n\">{}</td></tr>\
         <tr><th>Accepted read-only</th><td class=\"n\">{}</td></tr>\
         <tr><th>Protocol errors</th><td class=\"n\">{}</td></tr>\
         <tr><th>Fenced sessions (leader changed)</th><td class=\"n\">{}</td></tr>\
         <tr><th>Cancels forwarded</th><td class=\"n\">{}</td></tr>\
         <tr><th>TLS handshakes ok</th><td class=\"n\">{}</td></tr>\
         <tr><th>TLS handshakes failed</th><td class=\"n\">{}</td></tr></tbody></table>",
        s.accepted_rw, s.accepted_ro, s.protocol_errors, s.fenced, s.cancels, s.tls_ok, s.tls_failed,
    );
}

fn port_name(port: Port) -> &'static str {
    match port {
        Port::ReadWrite => "read-write",
        Port::ReadOnly => "read-only",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_view::overview;
    use crate::admin_view::tests::{pools, snapshot, POLICY};

    fn page(age: Duration) -> String {
        let (snap, routes) = snapshot(age);
        stats_html(&snap, &overview("pg<&>", &snap, &routes, POLICY), &pools(), None)
    }

    /// The `<tr>` of the member whose escaped name is `name`.
    fn row<'a>(html: &'a str, name: &str) -> &'a str {
        let start = html.find(&format!("data-member=\"{name}\"")).unwrap_or_else(|| panic!("no row for {name}"));
        let start = html[..start].rfind("<tr").unwrap();
        &html[start..start + html[start..].find("</tr>").unwrap()]
    }

    #[test]
    fn escapes_everything_from_the_dcs() {
        assert_eq!(escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
        let html = page(Duration::ZERO);
        assert!(!html.contains("c<\""), "raw member name in the page");
        assert!(row(&html, "c&lt;&quot;&amp;&#39;&gt;\\\n").contains("<td class=\"name\">c&lt;&quot;&amp;&#39;&gt;"));
        assert!(html.contains("<title>Rampart proxy: pg&lt;&amp;&gt;</title>"));
        assert!(!html.contains("pg<&>"));
        // Every tag the page opens is one of ours: nothing from the DCS became markup.
        let tags: std::collections::BTreeSet<&str> = html
            .split('<')
            .skip(1)
            .map(|t| t.split([' ', '>', '\n']).next().unwrap().trim_start_matches('/'))
            .collect();
        let ours = [
            "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "span", "dl", "div",
            "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "footer", "a",
        ];
        assert!(tags.iter().all(|t| ours.contains(t)), "{tags:?}");
    }

    #[test]
    fn healthy_page_marks_the_leader_and_routes() {
        let html = page(Duration::from_millis(300));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(html.contains("<dd id=\"leader\">a</dd>"));
        let a = row(&html, "a");
        assert!(a.starts_with("<tr class=\"member leader\""), "{a}");
        assert!(a.contains("<td class=\"role\">primary</td>") && a.contains("yes (rw)"), "{a}");
        let b = row(&html, "b");
        assert!(b.starts_with("<tr class=\"member\"") && b.contains("yes (ro)") && b.contains("500 B"), "{b}");
        assert!(html.contains("id=\"healthy\""));
        assert!(!html.contains("id=\"no-primary\"") && !html.contains("id=\"stale-view\""));
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    }

    #[test]
    fn splitting_counts_per_backend() {
        let (snap, routes) = snapshot(Duration::ZERO);
        let o = overview("pg", &snap, &routes, POLICY);
        assert!(!stats_html(&snap, &o, &pools(), None).contains("id=\"split\""), "no splitting, no section");
        let html = stats_html(&snap, &o, &pools(), Some(&crate::admin_json::tests::split_figures()));
        assert!(html.contains("<tr><th>Statements to replicas</th><td class=\"n\">70</td></tr>"), "{html}");
        assert!(html.contains("<td class=\"n\">98, 2, 2</td>"), "{html}");
        assert!(
            html.contains("<tr data-backend=\"127.0.0.1:5002&lt;&amp;&gt;\"><td>127.0.0.1:5002&lt;&amp;&gt;</td><td class=\"n\">70</td></tr>"),
            "backends escaped: {html}"
        );
    }

    #[test]
    fn warns_without_primary_or_view() {
        let html = page(Duration::from_secs(31));
        assert!(html.contains("id=\"stale-view\"") && html.contains("id=\"no-primary\""), "{html}");
        assert!(html.contains("<dd id=\"rw-route\">none (clients held)</dd>"));
        let html = page(Duration::from_secs(5));
        assert!(html.contains("id=\"lagging-view\"") && !html.contains("id=\"no-primary\""));

        let (mut snap, _) = snapshot(Duration::ZERO);
        snap.view = None;
        let html = stats_html(&snap, &overview("pg", &snap, &Default::default(), POLICY), &PoolsView::default(), None);
        assert!(html.contains("id=\"no-view\"") && html.contains("id=\"no-primary\""));
        assert!(html.contains("<dd id=\"leader\">none</dd>"));
        assert!(row(&html, "a").starts_with("<tr class=\"member gone\""), "sessions on a member no view lists");
        assert!(
            html.contains("<table id=\"pools\">") && html.contains("No pools:"),
            "the section says why it is empty"
        );
    }

    /// The `<tr>` of the pool of `database`, `user` (escaped) and `backend`.
    fn pool_row<'a>(html: &'a str, database: &str, user: &str, backend: &str) -> &'a str {
        let attrs = format!("data-database=\"{database}\" data-user=\"{user}\" data-backend=\"{backend}\"");
        let start = html.find(&attrs).unwrap_or_else(|| panic!("no pool {attrs}"));
        let start = html[..start].rfind("<tr").unwrap();
        &html[start..start + html[start..].find("</tr>").unwrap()]
    }

    #[test]
    fn pools_table_shows_every_pool_and_its_database_counters() {
        let html = page(Duration::ZERO);
        let cells = |row: &str| -> Vec<String> {
            row.split("<td")
                .skip(1)
                .map(|c| c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()].to_string())
                .collect()
        };
        let app = pool_row(&html, "app", "app", "a");
        assert_eq!(cells(app), ["app", "app", "a", "5", "2", "4", "0", "1", "1.5 s"], "{app}");
        let gone = pool_row(&html, "postgres", "u&lt;&quot;&amp;&#39;&gt;\\\n", "b");
        assert!(gone.starts_with("<tr class=\"pool gone\"") && gone.contains("b (no longer a route)"), "{gone}");
        assert!(!html.contains("u<\""), "raw user name in the page");
        let stats = &html[html.find("<table id=\"pool-stats\">").expect("pool stats table")..];
        let app = &stats[stats.find("data-database=\"app\"").unwrap()..];
        let app = &app[..app.find("</tr>").unwrap()];
        assert_eq!(cells(app), ["app", "100", "250", "4.0 KiB", "8.0 KiB", "2.5 s", "0.5 s"], "{app}");
    }

    #[test]
    fn human_units() {
        assert_eq!(
            (bytes(0), bytes(1023), bytes(1536), bytes(5 << 30)),
            ("0 B".into(), "1023 B".into(), "1.5 KiB".into(), "5.0 GiB".into())
        );
        assert_eq!(duration(Duration::from_millis(1300)), "1.3 s");
        assert_eq!(duration(Duration::from_secs(184)), "3 min 4 s");
        assert_eq!(duration(Duration::from_secs(90_000)), "1 d 1 h");
    }
}
