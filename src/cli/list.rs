//! `rampart list` and `rampart topology`: the member table, as `patronictl list` and
//! `patronictl topology` (Patroni 4) print it.
//!
//! Rendering is pure, from a [`Cluster`] snapshot, so the layout is unit-tested without a DCS.
//! Columns: Member, Host, Role, State, TL, Receive LSN, Receive Lag, Replay LSN, Replay Lag (both
//! lags titled `Lag` in the pretty table), plus Pending restart, Pending restart reason, Scheduled
//! restart and Tags when any member has one (or always with `-e`), under a title naming the
//! cluster and its system identifier, and followed by `Maintenance mode: on`, a scheduled
//! switchover and the last backup (`rampart backup`) when there are. The machine formats (`tsv`, `json`, `yaml`) add a Cluster column
//! and leave the footer out. `topology` orders members as a tree: the leader, then the replicas
//! streaming from it, each cascading replica (`replicatefrom` tag) under the member it streams
//! from.
//!
//! Positions and lags are computed as Patroni's `cluster_as_json` does, so that `rampart list`
//! and `patronictl list` print the same numbers for the same DCS contents: a replica's
//! `receive_lsn`/`replay_lsn` against the leader's last position in the `status` key, lag in
//! whole MB rounded half to even, `unknown` for a position the member did not publish.

use std::time::Duration;

use anyhow::Result;
use rampart_core::Cluster;
use serde_json::{json, Value};

use super::session::{block_on, Session};
use super::table::{Format, Table};
use super::target::{self, TargetArgs};

/// Options of `rampart list`.
#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Clusters to list, one table each (default: the configuration's `scope`).
    #[arg(value_name = "CLUSTER")]
    pub clusters: Vec<String>,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
    /// Always show the Pending restart, Pending restart reason, Scheduled restart and Tags columns.
    #[arg(short = 'e', long)]
    pub extended: bool,
    /// Print the time before each table.
    #[arg(short = 't', long)]
    pub timestamp: bool,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// Options of `rampart topology`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopologyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Clusters to show, one tree each (default: the configuration's `scope`).
    #[arg(value_name = "CLUSTER")]
    pub clusters: Vec<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `-W` / `-w SECONDS`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// Refresh every 2 seconds until interrupted.
    #[arg(short = 'W')]
    pub every_two: bool,
    /// Refresh every SECONDS until interrupted.
    #[arg(short = 'w', long = "watch", value_name = "SECONDS", value_parser = positive_seconds)]
    pub watch: Option<f64>,
}

impl WatchArgs {
    /// The refresh interval, if watching.
    pub fn interval(&self) -> Option<Duration> {
        match (self.watch, self.every_two) {
            (Some(s), _) => Some(Duration::from_secs_f64(s)),
            (None, true) => Some(Duration::from_secs(2)),
            (None, false) => None,
        }
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 86_400.0 => Ok(v),
        _ => Err(format!("expected a number of seconds above 0, got {s:?}")),
    }
}

/// Where a replica is on one of its WAL positions (received or replayed), as the table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The member published no such position.
    Unknown,
    /// At `lsn`, `lag` bytes behind the leader's last known position.
    At { lsn: u64, lag: u64 },
}

impl Position {
    /// Patroni's rule: no lag when the member is ahead of what the `status` key says.
    fn of(lsn: Option<u64>, cluster_lsn: u64) -> Position {
        match lsn {
            // Patroni treats a zero position like a missing one.
            None | Some(0) => Position::Unknown,
            Some(lsn) => Position::At { lsn, lag: cluster_lsn.saturating_sub(lsn) },
        }
    }

    /// The LSN cell: `0/3000060` or `unknown`.
    fn lsn_cell(p: Option<Position>) -> Value {
        match p {
            None => Value::Null,
            Some(Position::Unknown) => json!("unknown"),
            Some(Position::At { lsn, .. }) => json!(rampart_core::Lsn(lsn).to_string()),
        }
    }

    /// The lag cell: whole MB, empty when unknown.
    fn lag_cell(p: Option<Position>) -> Value {
        match p {
            Some(Position::At { lag, .. }) => json!(round_mb(lag)),
            _ => Value::Null,
        }
    }
}

/// Bytes as whole MB the way Python's `round(lag / 1024 / 1024)` gives them: half to even.
pub fn round_mb(bytes: u64) -> u64 {
    const MB: u64 = 1024 * 1024;
    let (q, r) = (bytes / MB, bytes % MB);
    match (2 * r).cmp(&MB) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q % 2),
        std::cmp::Ordering::Less => q,
    }
}

/// One member as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Member name.
    pub member: String,
    /// `host` or `host:port`.
    pub host: String,
    /// `Leader`, `Standby Leader`, `Sync Standby`, `Quorum Standby` or `Replica`.
    pub role: String,
    /// PostgreSQL or replication state.
    pub state: String,
    /// Timeline, if known.
    pub tl: Option<u32>,
    /// Received position; `None` for the leader.
    pub receive: Option<Position>,
    /// Replayed position; `None` for the leader.
    pub replay: Option<Position>,
    /// A parameter change waits for a restart.
    pub pending_restart: bool,
    /// Which parameters wait, as `name: old->new` (`pending_restart_reason`), if published.
    pub pending_reason: Vec<(String, String)>,
    /// When a restart is scheduled (and for which version), if one is.
    pub scheduled_restart: Option<String>,
    /// Tags other than the defaults (an empty object when none).
    pub tags: Value,
    /// Holds the leader lock.
    pub is_leader: bool,
    /// The member this one streams from, when tagged so.
    pub replicatefrom: Option<String>,
    /// The virtual address its host has (`vip`), as its agent published it.
    pub vip: Option<String>,
}

fn synchronous_mode(cluster: &Cluster) -> Option<String> {
    match cluster.config.as_ref()?.sync_mode() {
        rampart_core::SyncMode::On => Some("on".into()),
        rampart_core::SyncMode::Quorum => Some("quorum".into()),
        rampart_core::SyncMode::Off => None,
    }
}

/// Builds the rows, in member-name order.
pub fn rows(cluster: &Cluster) -> Vec<Row> {
    // Patroni measures lag against the `status` key only (what the leader last wrote there).
    let cluster_lsn = cluster.status.optime;
    let hosts: Vec<(String, u16)> = cluster.members.iter().filter_map(|m| m.data.conn_host_port()).collect();
    // patronictl shows the port only when it is needed to tell members apart or is not 5432.
    let show_port = hosts.iter().any(|(_, p)| *p != 5432)
        || hosts.iter().enumerate().any(|(i, (h, _))| hosts[..i].iter().any(|(h2, _)| h2 == h));
    let standby_cluster =
        cluster.config.as_ref().is_some_and(|c| c.extra.get("standby_cluster").is_some_and(|v| v.is_object()));
    let sync_mode = synchronous_mode(cluster);
    let sync_names: Vec<String> = cluster
        .sync
        .as_ref()
        .and_then(|s| s.sync_standby.as_deref())
        .map(|s| s.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    cluster
        .members
        .iter()
        .map(|m| {
            let is_leader = cluster.is_leader(&m.name);
            let host = match m.data.conn_host_port() {
                Some((h, p)) if show_port => format!("{h}:{p}"),
                Some((h, _)) => h,
                None => String::new(),
            };
            let role = if is_leader {
                if standby_cluster || m.data.role == rampart_core::Role::StandbyLeader {
                    "Standby Leader"
                } else {
                    "Leader"
                }
            } else if sync_mode.is_some() && sync_names.contains(&m.name) {
                if sync_mode.as_deref() == Some("quorum") {
                    "Quorum Standby"
                } else {
                    "Sync Standby"
                }
            } else {
                "Replica"
            };
            // A replica shows how it replicates (`streaming`), as Patroni does.
            let state = match &m.data.replication_state {
                Some(rs) if !is_leader && !rs.is_empty() => rs.clone(),
                _ => m.data.state.to_string(),
            };
            let (receive, replay) = if is_leader {
                (None, None)
            } else {
                let mut receive = Position::of(m.data.receive_lsn, cluster_lsn);
                let mut replay = Position::of(m.data.replay_lsn, cluster_lsn);
                // A member of an older Patroni publishes only `xlog_location`: Patroni shows it as
                // received while streaming, else as replayed.
                let xlog = Position::of(m.data.xlog_location, cluster_lsn);
                if receive == Position::Unknown && replay == Position::Unknown && xlog != Position::Unknown {
                    if state == "streaming" {
                        receive = xlog;
                    } else {
                        replay = xlog;
                    }
                }
                (Some(receive), Some(replay))
            };
            let scheduled_restart = m.data.extra.get("scheduled_restart").and_then(|s| {
                let at = s.get("schedule")?.as_str()?.to_string();
                Some(match s.get("postgres_version").and_then(Value::as_str) {
                    Some(v) => format!("{at} if version < {v}"),
                    None => at,
                })
            });
            let pending_reason = m
                .data
                .extra
                .get("pending_restart_reason")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(name, v)| {
                            let side = |k: &str| v.get(k).map(super::table::cell_text_flow).unwrap_or_default();
                            (name.clone(), format!("{name}: {}->{}", side("old_value"), side("new_value")))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Row {
                member: m.name.clone(),
                host,
                role: role.into(),
                state,
                tl: m.data.timeline,
                receive,
                replay,
                pending_restart: m.data.pending_restart == Some(true),
                pending_reason,
                scheduled_restart,
                // Tags at their defaults are not serialized, so this is what was set.
                tags: serde_json::to_value(&m.data.tags).unwrap_or_else(|_| json!({})),
                is_leader,
                replicatefrom: m.data.tags.replicatefrom.clone(),
                vip: m.data.extra.get("vip").and_then(Value::as_str).map(str::to_string),
            }
        })
        .collect()
}

/// The order and depth of members in the replication tree: the leader at depth 0, a member
/// streaming from another replica (tag `replicatefrom`) under that replica, every other member
/// under the leader. Without a leader its would-be children start at depth 1. Members caught in
/// a `replicatefrom` cycle are listed last under the leader rather than dropped.
pub fn topology_order(rows: &[Row]) -> Vec<(usize, usize)> {
    let leader = rows.iter().position(|r| r.is_leader);
    let is_replica = |name: &str| rows.iter().any(|r| !r.is_leader && r.member == name);
    let parent_of = |r: &Row| -> Option<String> {
        match &r.replicatefrom {
            Some(p) if *p != r.member && is_replica(p) => Some(p.clone()),
            _ => leader.map(|l| rows[l].member.clone()),
        }
    };
    let mut out = Vec::new();
    let mut seen = vec![false; rows.len()];
    if let Some(l) = leader {
        out.push((l, 0));
        seen[l] = true;
    }
    // Depth-first from the leader (or from "no leader", whose children sit at depth 1).
    fn visit(
        rows: &[Row],
        parent: Option<&str>,
        depth: usize,
        parent_of: &dyn Fn(&Row) -> Option<String>,
        seen: &mut Vec<bool>,
        out: &mut Vec<(usize, usize)>,
    ) {
        for (i, r) in rows.iter().enumerate() {
            if seen[i] || r.is_leader || parent_of(r).as_deref() != parent {
                continue;
            }
            seen[i] = true;
            out.push((i, depth + 1));
            visit(rows, Some(&r.member), depth + 1, parent_of, seen, out);
        }
    }
    let root = leader.map(|l| rows[l].member.as_str());
    visit(rows, root, 0, &parent_of, &mut seen, &mut out);
    for (i, s) in seen.iter().enumerate() {
        if !s {
            out.push((i, 1));
        }
    }
    out
}

/// `name`, `+ name` or `  + name` for depth 0, 1, 2.
fn tree_name(name: &str, depth: usize) -> String {
    if depth == 0 {
        name.to_string()
    } else {
        format!("{}+ {name}", " ".repeat((depth - 1) * 2))
    }
}

/// The member table. `extended` always shows the optional columns; `topology` orders the rows
/// as a tree.
pub fn member_table(scope: &str, cluster: &Cluster, extended: bool, topology: bool) -> Table {
    let rows = rows(cluster);
    let order: Vec<(usize, usize)> =
        if topology { topology_order(&rows) } else { (0..rows.len()).map(|i| (i, 0)).collect() };
    let pending = extended || rows.iter().any(|r| r.pending_restart);
    let reason = extended || rows.iter().any(|r| !r.pending_reason.is_empty());
    let scheduled = extended || rows.iter().any(|r| r.scheduled_restart.is_some());
    let tags = extended || rows.iter().any(|r| r.tags.as_object().is_some_and(|o| !o.is_empty()));
    let vip = rows.iter().any(|r| r.vip.is_some());
    let mut columns = vec![
        "Cluster",
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Receive LSN",
        "Receive Lag",
        "Replay LSN",
        "Replay Lag",
    ];
    if pending {
        columns.push("Pending restart");
    }
    if reason {
        columns.push("Pending restart reason");
    }
    if scheduled {
        columns.push("Scheduled restart");
    }
    if tags {
        columns.push("Tags");
    }
    if vip {
        columns.push("Virtual IP");
    }
    let sysid = match cluster.initialize.as_deref() {
        None => "uninitialized",
        Some("") => "initializing",
        Some(s) => s,
    };
    let mut t = Table::new(columns);
    t.title = Some(format!(" Cluster: {scope} ({sysid}) "));
    t.right = ["TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"].map(String::from).to_vec();
    t.skip_empty = true;
    t.machine_only = vec!["Cluster".into()];
    for (i, depth) in order {
        let r = &rows[i];
        let mut cells = vec![
            json!(scope),
            json!(tree_name(&r.member, depth)),
            json!(r.host),
            json!(r.role),
            json!(r.state),
            r.tl.map(Value::from).unwrap_or(Value::Null),
            Position::lsn_cell(r.receive),
            Position::lag_cell(r.receive),
            Position::lsn_cell(r.replay),
            Position::lag_cell(r.replay),
        ];
        if pending {
            cells.push(json!(if r.pending_restart { "*" } else { "" }));
        }
        if reason {
            cells.push(json!(r.pending_reason.iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join("\n")));
        }
        if scheduled {
            cells.push(r.scheduled_restart.clone().map(Value::from).unwrap_or(Value::Null));
        }
        if tags {
            let empty = r.tags.as_object().is_none_or(|o| o.is_empty());
            cells.push(if empty { Value::Null } else { r.tags.clone() });
        }
        if vip {
            cells.push(r.vip.clone().map(Value::from).unwrap_or(Value::Null));
        }
        t.rows.push(cells);
    }
    t
}

/// The lines under the pretty table: maintenance mode, a scheduled switchover, the last backup
/// and which proxy holds each of the proxies' virtual addresses.
pub fn footer(cluster: &Cluster) -> String {
    let mut lines = Vec::new();
    if cluster.config.as_ref().is_some_and(|c| c.paused()) {
        lines.push(" Maintenance mode: on".to_string());
    }
    if let Some(at) = cluster.failover.as_ref().and_then(|f| f.scheduled_at.as_ref().map(|at| (f, at))) {
        let (f, at) = at;
        let mut s = format!(" Switchover scheduled at: {at}");
        if let Some(from) = &f.leader {
            s.push_str(&format!("\n{:>24}: {from}", "from"));
        }
        if let Some(to) = &f.member {
            s.push_str(&format!("\n{:>24}: {to}", "to"));
        }
        lines.push(s);
    }
    if let Some(b) = &cluster.backup {
        lines.push(backup_line(b));
    }
    for (address, holder) in &cluster.proxy_addresses {
        lines.push(format!(" Proxy virtual IP {address}: held by proxy {holder}"));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// ` Last backup: ...`, from the `backup` key `rampart backup` writes.
pub fn backup_line(b: &rampart_core::backup::BackupReport) -> String {
    let at = |secs: f64| {
        jiff::Timestamp::from_second(secs as i64)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|_| format!("{secs}"))
    };
    let who = format!("on {} ({}, {})", b.member, b.role.as_str(), b.program);
    match (b.state, b.duration_secs()) {
        (rampart_core::backup::BackupState::Running, _) | (_, None) => {
            format!(" Backup running {who} since {}", at(b.started_at))
        }
        (state, Some(took)) => {
            let code = b.exit_code.map(|c| format!(", exit code {c}")).unwrap_or_default();
            format!(" Last backup: {} {who}, started {}, took {took:.0} s{code}", state.as_str(), at(b.started_at))
        }
    }
}

/// The table in `format`, with the footer in `pretty`.
pub fn render(scope: &str, cluster: &Cluster, format: Format, extended: bool, topology: bool) -> String {
    let mut table = member_table(scope, cluster, extended, topology);
    if format == Format::Pretty {
        hide_long_reasons(&mut table);
        // Under its LSN column a lag needs no more words (patronictl's short titles).
        for c in table.columns.iter_mut().filter(|c| *c == "Receive Lag" || *c == "Replay Lag") {
            *c = "Lag".into();
        }
        table.right.push("Lag".into());
    }
    let mut out = table.render(format);
    if format == Format::Pretty {
        out.push_str(&footer(cluster));
    }
    out
}

/// In the pretty table a reason longer than 50 characters becomes `name: [hidden - too long]`,
/// as patronictl does, so one long value does not stretch the table.
fn hide_long_reasons(t: &mut Table) {
    let Some(col) = t.columns.iter().position(|c| c == "Pending restart reason") else { return };
    for row in &mut t.rows {
        if let Some(text) = row[col].as_str() {
            let shown: Vec<String> = text
                .lines()
                .map(|l| match l.split_once(": ") {
                    Some((name, _)) if l.chars().count() > 50 => format!("{name}: [hidden - too long]"),
                    _ => l.to_string(),
                })
                .collect();
            row[col] = json!(shown.join("\n"));
        }
    }
}

/// The pretty table with its footer (also what `rampart demo` prints).
pub fn render_table(scope: &str, cluster: &Cluster) -> String {
    render(scope, cluster, Format::Pretty, false, false)
}

/// The targets of the clusters named on the command line, else the configuration's.
fn targets(args: &TargetArgs, clusters: &[String]) -> Result<Vec<target::Target>> {
    if clusters.is_empty() {
        return Ok(vec![target::resolve(args, None)?]);
    }
    clusters.iter().map(|c| target::resolve(args, Some(c))).collect()
}

/// `rampart list`.
pub fn run(args: ListArgs) -> Result<()> {
    let targets = targets(&args.target, &args.clusters)?;
    block_on(show(targets, args.format, args.extended, false, args.timestamp, args.watch.interval()))
}

/// `rampart topology`.
pub fn run_topology(args: TopologyArgs) -> Result<()> {
    let targets = targets(&args.target, &args.clusters)?;
    block_on(show(targets, Format::Pretty, false, true, false, args.watch.interval()))
}

async fn show(
    targets: Vec<target::Target>,
    format: Format,
    extended: bool,
    topology: bool,
    timestamp: bool,
    watch: Option<Duration>,
) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let mut sessions = Vec::new();
    for t in targets {
        sessions.push(Session::open(t).await?);
    }
    let clear = watch.is_some() && std::io::stdout().is_terminal();
    loop {
        let started = tokio::time::Instant::now();
        let mut out = String::new();
        if clear {
            // Clear the screen and go home, as `watch` does.
            out.push_str("\x1b[2J\x1b[H");
        }
        if timestamp {
            out.push_str(&jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S\n").to_string());
        }
        for session in &sessions {
            match session.cluster().await {
                Ok(cluster) => out.push_str(&render(session.scope(), &cluster, format, extended, topology)),
                // While watching, a failed read is shown and the next one tried.
                Err(e) if watch.is_some() => out.push_str(&format!("{e:#}\n")),
                Err(e) => return Err(e),
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        drop(stdout);
        let Some(every) = watch else { return Ok(()) };
        tokio::time::sleep_until(started + every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::members::tests::cluster;

    fn sample() -> Cluster {
        cluster(&[
            ("initialize", "7301"),
            ("leader", "a"),
            ("status", r#"{"optime":83886080}"#),
            (
                "members/a",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","state":"running","role":"primary","xlog_location":83886080,"timeline":2}"#,
            ),
            (
                "members/b",
                r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","state":"running","role":"replica","xlog_location":83886080,"receive_lsn":83886080,"replay_lsn":79167488,"replication_state":"streaming","timeline":2}"#,
            ),
            ("members/c", r#"{"conn_url":"postgres://127.0.0.1:5435/postgres","state":"stopped","role":"replica"}"#),
            // A proxy's report (Rampart's own key): not a member, no row.
            ("proxies/app-1", r#"{"drain_timeout":5,"drained":"a"}"#),
        ])
    }

    #[test]
    fn the_host_with_the_virtual_address_is_shown_when_any_has_it() {
        let mut c = Cluster {
            leader: Some(rampart_core::model::Leader { name: "a".into(), lease: 1, mod_revision: 1 }),
            ..Default::default()
        };
        for name in ["a", "b"] {
            let mut m = rampart_core::model::Member { name: name.into(), data: Default::default(), lease: 1 };
            m.data.conn_url = format!("postgres://10.0.0.{}:5432/postgres", if name == "a" { 1 } else { 2 });
            c.members.push(m);
        }
        let plain = member_table("pg", &c, false, false);
        assert!(!plain.columns.iter().any(|col| col == "Virtual IP"));
        c.members[0].data.extra.insert("vip".into(), json!("10.0.0.100"));
        let t = member_table("pg", &c, false, false);
        let col = t.columns.iter().position(|col| col == "Virtual IP").expect("a Virtual IP column");
        assert_eq!((&t.rows[0][col], &t.rows[1][col]), (&json!("10.0.0.100"), &Value::Null));
    }

    #[test]
    fn table_looks_like_patronictl() {
        // The expected text is what patronictl 4.1.5's print_output writes for these rows.
        let t = render_table("pg", &sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0], "+ Cluster: pg (7301) -----+---------+-----------+----+-------------+-----+------------+-----+",
            "{t}"
        );
        assert_eq!(
            lines[1],
            "| Member | Host           | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag |"
        );
        assert_eq!(
            lines[3],
            "| a      | 127.0.0.1:5433 | Leader  | running   |  2 |             |     |            |     |"
        );
        assert_eq!(
            lines[4],
            "| b      | 127.0.0.1:5434 | Replica | streaming |  2 |   0/5000000 |   0 |  0/4B80000 |   4 |"
        );
        assert_eq!(
            lines[5],
            "| c      | 127.0.0.1:5435 | Replica | stopped   |    |     unknown |     |    unknown |     |"
        );
        assert_eq!(lines.len(), 7, "no footer: {t}");
    }

    #[test]
    fn json_rows_have_patronictl_keys() {
        let json = member_table("pg", &sample(), false, false).render(Format::Json);
        assert!(
            json.starts_with(r#"[{"Cluster": "pg", "Member": "a", "Host": "127.0.0.1:5433", "Role": "Leader", "State": "running", "TL": 2}, {"Cluster": "pg", "Member": "b", "#),
            "{json}"
        );
        let v: Value = serde_json::from_str(&json).unwrap();
        assert!(v[0].get("Receive LSN").is_none() && v[0].get("Replay Lag").is_none(), "the leader has no lag");
        assert_eq!(v[1]["Receive LSN"], "0/5000000");
        assert_eq!(v[1]["Receive Lag"], 0);
        assert_eq!(v[1]["Replay LSN"], "0/4B80000");
        assert_eq!(v[1]["Replay Lag"], 4, "4.5 MB rounds half to even");
        assert_eq!(v[1]["State"], "streaming");
        assert_eq!(v[1]["TL"], 2);
        assert!(v[2].get("TL").is_none(), "no timeline, no key");
        assert_eq!((&v[2]["Receive LSN"], &v[2]["Replay LSN"]), (&json!("unknown"), &json!("unknown")));
        assert!(v[2].get("Receive Lag").is_none(), "an unknown lag is empty");
        assert!(!json.contains("Lag in MB"));
    }

    #[test]
    fn lag_rounds_like_python() {
        let mb = 1024 * 1024;
        let cases = [(0, 0), (mb / 2, 0), (mb / 2 + 1, 1), (mb + mb / 2, 2), (2 * mb + mb / 2, 2), (3 * mb - 1, 3)];
        for (bytes, want) in cases {
            assert_eq!(round_mb(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn positions_of_older_members_and_ahead_of_the_status_key() {
        let c = cluster(&[
            ("leader", "a"),
            ("status", r#"{"optime":1000}"#),
            ("members/a", r#"{"state":"running","role":"primary"}"#),
            // Patroni 3: only xlog_location; streaming shows it as received, else as replayed.
            (
                "members/b",
                r#"{"state":"running","role":"replica","xlog_location":900,"replication_state":"streaming"}"#,
            ),
            ("members/c", r#"{"state":"running","role":"replica","xlog_location":900}"#),
            // Ahead of the status key: no lag rather than a negative one.
            ("members/d", r#"{"state":"running","role":"replica","receive_lsn":2000,"replay_lsn":1500}"#),
        ]);
        let r = rows(&c);
        assert_eq!((r[1].receive, r[1].replay), (Some(Position::At { lsn: 900, lag: 100 }), Some(Position::Unknown)));
        assert_eq!((r[2].receive, r[2].replay), (Some(Position::Unknown), Some(Position::At { lsn: 900, lag: 100 })));
        assert_eq!(r[3].receive, Some(Position::At { lsn: 2000, lag: 0 }));
        assert_eq!(r[3].replay, Some(Position::At { lsn: 1500, lag: 0 }));
    }

    #[test]
    fn tsv_and_yaml_carry_the_cluster_column() {
        let t = member_table("pg", &sample(), false, false);
        let tsv = t.render(Format::Tsv);
        assert!(
            tsv.starts_with(
                "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\n\
                 pg\ta\t127.0.0.1:5433\tLeader\trunning\t2\t\t\t\t\n\
                 pg\tb\t127.0.0.1:5434\tReplica\tstreaming\t2\t0/5000000\t0\t0/4B80000\t4\n"
            ),
            "{tsv}"
        );
        let yaml = t.render(Format::Yaml);
        assert!(
            yaml.starts_with(
                "- Cluster: pg\n  Host: 127.0.0.1:5433\n  Member: a\n  Role: Leader\n  State: running\n  TL: 2\n- "
            ),
            "{yaml}"
        );
        assert!(
            yaml.contains("\n  Receive LSN: 0/5000000\n  Receive Lag: 0\n  Replay LSN: 0/4B80000\n  Replay Lag: 4\n"),
            "{yaml}"
        );
    }

    #[test]
    fn optional_columns_and_footer() {
        let c = cluster(&[
            ("initialize", "7301"),
            ("config", r#"{"pause":true}"#),
            ("leader", "a"),
            ("failover", r#"{"leader":"a","member":"b","scheduled_at":"2030-01-01T00:00:00+00:00"}"#),
            (
                "members/a",
                r#"{"conn_url":"postgres://h1:5432/postgres","state":"running","role":"primary","pending_restart":true,"tags":{}}"#,
            ),
            (
                "members/b",
                r#"{"conn_url":"postgres://h2:5432/postgres","state":"running","role":"replica","tags":{"clonefrom":true,"zone":"x"},"scheduled_restart":{"schedule":"2030-01-01T01:00:00+00:00","postgres_version":"16.1"}}"#,
            ),
        ]);
        let t = render_table("pg", &c);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], "| Member | Host | Role    | State   | TL | Receive LSN | Lag | Replay LSN | Lag | Pending restart | Scheduled restart                           | Tags            |", "{t}");
        assert!(
            lines[3].starts_with(
                "| a      | h1   | Leader  | running |    |             |     |            |     | *               |"
            ),
            "{t}"
        );
        // The multi-line tag cell makes PrettyTable rule every row.
        assert!(lines[4].starts_with("+--------+"), "{t}");
        assert!(lines[5].ends_with("| 2030-01-01T01:00:00+00:00 if version < 16.1 | clonefrom: true |"), "{t}");
        assert!(lines[6].ends_with("|                                             | zone: x         |"), "{t}");
        assert_eq!(
            &lines[8..],
            [
                " Maintenance mode: on",
                " Switchover scheduled at: 2030-01-01T00:00:00+00:00",
                "                    from: a",
                "                      to: b"
            ],
            "{t}"
        );
        let tsv = member_table("pg", &c, false, false).render(Format::Tsv);
        assert!(
            tsv.lines()
                .nth(2)
                .unwrap()
                .ends_with("\t\t2030-01-01T01:00:00+00:00 if version < 16.1\t{clonefrom: true, zone: x}"),
            "{tsv}"
        );
        // -e shows the optional columns even when no member has a value.
        let plain = member_table("pg", &sample(), true, false);
        let optional = ["Pending restart", "Pending restart reason", "Scheduled restart", "Tags"].map(String::from);
        assert!(plain.columns.ends_with(&optional), "{:?}", plain.columns);
        assert!(!member_table("pg", &sample(), false, false).columns.contains(&"Tags".to_string()));
    }

    #[test]
    fn sync_and_standby_roles() {
        let c = cluster(&[
            ("config", r#"{"synchronous_mode":true}"#),
            ("leader", "a"),
            ("sync", r#"{"leader":"a","sync_standby":"b"}"#),
            ("members/a", r#"{"state":"running","role":"primary"}"#),
            ("members/b", r#"{"state":"running","role":"replica"}"#),
            ("members/c", r#"{"state":"running","role":"replica"}"#),
        ]);
        let roles: Vec<String> = rows(&c).into_iter().map(|r| r.role).collect();
        assert_eq!(roles, ["Leader", "Sync Standby", "Replica"]);
        let s = cluster(&[("leader", "a"), ("members/a", r#"{"state":"running","role":"standby_leader"}"#)]);
        assert_eq!(rows(&s)[0].role, "Standby Leader");
    }

    #[test]
    fn topology_nests_cascading_replicas() {
        let c = cluster(&[
            ("initialize", "1"),
            ("leader", "b"),
            (
                "members/a",
                r#"{"conn_url":"postgres://h1:5432/postgres","state":"running","role":"replica","tags":{"replicatefrom":"c"}}"#,
            ),
            ("members/b", r#"{"conn_url":"postgres://h2:5432/postgres","state":"running","role":"primary"}"#),
            ("members/c", r#"{"conn_url":"postgres://h3:5432/postgres","state":"running","role":"replica"}"#),
            (
                "members/d",
                r#"{"conn_url":"postgres://h4:5432/postgres","state":"running","role":"replica","tags":{"replicatefrom":"b"}}"#,
            ),
            (
                "members/e",
                r#"{"conn_url":"postgres://h5:5432/postgres","state":"running","role":"replica","tags":{"replicatefrom":"a"}}"#,
            ),
        ]);
        let t = render("pg", &c, Format::Pretty, false, true);
        let names: Vec<&str> = t
            .lines()
            .skip(3)
            .filter(|l| l.starts_with("| "))
            .map(|l| l[2..].split(" | ").next().unwrap().trim_end())
            .collect();
        assert_eq!(names, ["b", "+ c", "  + a", "    + e", "+ d"], "{t}");
    }

    #[test]
    fn topology_without_leader_and_with_cycles() {
        let c = cluster(&[
            ("members/a", r#"{"state":"running","role":"replica","tags":{"replicatefrom":"b"}}"#),
            ("members/b", r#"{"state":"running","role":"replica","tags":{"replicatefrom":"a"}}"#),
            ("members/c", r#"{"state":"stopped","role":"replica"}"#),
        ]);
        let order = topology_order(&rows(&c));
        assert_eq!(order, [(2, 1), (0, 1), (1, 1)], "every member listed once");
    }

    #[test]
    fn pending_restart_reasons() {
        let long = "x".repeat(60);
        let c = cluster(&[
            ("leader", "a"),
            (
                "members/a",
                &format!(
                    r#"{{"state":"running","role":"primary","pending_restart":true,"pending_restart_reason":{{"max_connections":{{"old_value":"100","new_value":"150"}},"shared_preload_libraries":{{"old_value":"","new_value":"{long}"}}}}}}"#
                ),
            ),
            ("members/b", r#"{"state":"running","role":"replica"}"#),
        ]);
        let t = render_table("pg", &c);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].ends_with("| Pending restart | Pending restart reason                        |"), "{t}");
        assert!(lines[3].ends_with("| *               | max_connections: 100->150                     |"), "{t}");
        assert!(lines[4].ends_with("|                 | shared_preload_libraries: [hidden - too long] |"), "{t}");
        let v: Value = serde_json::from_str(&member_table("pg", &c, false, false).render(Format::Json)).unwrap();
        assert_eq!(
            v[0]["Pending restart reason"],
            json!(format!("max_connections: 100->150\nshared_preload_libraries: ->{long}"))
        );
        assert!(v[1].get("Pending restart reason").is_none());
    }

    #[test]
    fn the_last_backup_follows_the_table() {
        use rampart_core::backup::{BackupReport, BackupRole, BackupState};
        let report = BackupReport {
            member: "a".into(),
            role: BackupRole::Replica,
            program: "pgbackrest".into(),
            state: BackupState::Succeeded,
            started_at: 1_764_930_000.0,
            finished_at: Some(1_764_930_035.4),
            exit_code: Some(0),
            last_success_at: Some(1_764_930_035.4),
        };
        assert_eq!(
            backup_line(&report),
            " Last backup: succeeded on a (replica, pgbackrest), started 2025-12-05 10:20:00 UTC, took 35 s, exit code 0"
        );
        let running = BackupReport { state: BackupState::Running, finished_at: None, exit_code: None, ..report };
        assert_eq!(backup_line(&running), " Backup running on a (replica, pgbackrest) since 2025-12-05 10:20:00 UTC");
        let c = Cluster { backup: Some(running), ..Default::default() };
        assert!(footer(&c).ends_with("since 2025-12-05 10:20:00 UTC\n"));
    }

    #[test]
    fn the_proxy_holding_each_proxy_address_follows_the_table() {
        let c = Cluster {
            proxy_addresses: [("10.0.0.5".to_string(), "app1-4242".to_string())].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(footer(&c), " Proxy virtual IP 10.0.0.5: held by proxy app1-4242\n");
    }
}
