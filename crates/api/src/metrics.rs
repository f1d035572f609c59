//! `GET /metrics`: Patroni's Prometheus metrics, computed at scrape time from the snapshot.
//!
//! Written by hand rather than with the `prometheus-client` crate: that crate speaks OpenMetrics,
//! which appends `_total` to counters and ends with `# EOF`, so it cannot reproduce Patroni's
//! names (`patroni_xlog_location` is a counter without `_total`) that dashboards and alerts use;
//! and there is no state to register, every value is read from one snapshot per scrape.
//!
//! Invariants kept here:
//! * names, HELP texts, types and the `{scope, name}` labels are Patroni's (`do_GET_metrics`);
//! * values follow the `/patroni` body: PostgreSQL positions, timeline and version are 0 unless
//!   PostgreSQL runs and its postmaster is alive, so a dead server never reports stale numbers;
//! * label values are escaped as the text format requires, so any scope or name yields valid lines.

use std::fmt::Write;

use jiff::Timestamp;

use crate::snapshot::NodeSnapshot;
use rampart_core::Role;

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Patroni's fixed numbering of PostgreSQL states (`PostgresqlState` indexes), for
/// `patroni_postgres_state`; never renumbered, monitoring depends on it.
const STATES: [(&str, &str); 15] = [
    ("initializing new cluster", "initdb"),
    ("initdb failed", "initdb_failed"),
    ("running custom bootstrap script", "custom_bootstrap"),
    ("custom bootstrap failed", "custom_bootstrap_failed"),
    ("creating replica", "creating_replica"),
    ("running", "running"),
    ("starting", "starting"),
    ("starting after custom bootstrap", "bootstrap_starting"),
    ("start failed", "start_failed"),
    ("restarting", "restarting"),
    ("restart failed", "restart_failed"),
    ("stopping", "stopping"),
    ("stopped", "stopped"),
    ("stop failed", "stop_failed"),
    ("crashed", "crashed"),
];

/// `4.1.4` → `040104`: each component's leading digits, zero-padded to two.
pub fn padded_version(version: &str) -> String {
    let mut out = String::new();
    for part in version.split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let _ = write!(out, "{:0>2}", if digits.is_empty() { "0" } else { &digits });
    }
    if out.is_empty() {
        "0".into()
    } else {
        out
    }
}

/// Seconds since the epoch of a PostgreSQL `timestamptz` as text (`2026-01-01 10:00:00.5+02`)
/// or of an ISO 8601 timestamp; `None` when it does not parse.
pub fn epoch_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let parsed = text.parse::<Timestamp>().ok().or_else(|| {
        // PostgreSQL prints whole-hour offsets as `+02`; ISO 8601 parsers want `+02:00`.
        let (head, tail) = text.split_at(text.len().checked_sub(3)?);
        let hour_offset =
            (tail.starts_with('+') || tail.starts_with('-')) && tail[1..].bytes().all(|b| b.is_ascii_digit());
        if hour_offset {
            format!("{head}{tail}:00").parse::<Timestamp>().ok()
        } else {
            None
        }
    })?;
    Some(parsed.as_second() as f64 + f64::from(parsed.subsec_nanosecond()) / 1e9)
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "{name}{} {value}", self.labels);
    }

    fn flag(&mut self, name: &str, help: &str, on: bool) {
        self.metric(name, "gauge", help, u8::from(on));
    }
}

/// The `/metrics` body for `s` whose postmaster is `alive`.
pub fn metrics_text(s: &NodeSnapshot, alive: bool) -> String {
    let queryable = alive && s.is_running();
    let replica = queryable && s.in_recovery;
    let primary_pos = queryable && !s.in_recovery;
    let secs = |t: &Option<String>| t.as_deref().filter(|_| queryable).and_then(epoch_seconds).unwrap_or(0.0);
    let server_version = if queryable { s.server_version } else { 0 };
    let state = if s.is_running() && !alive { "unknown" } else { s.state.as_str() };

    let mut o = Out {
        text: String::with_capacity(4096),
        labels: format!("{{scope=\"{}\",name=\"{}\"}}", escape_label(&s.scope), escape_label(&s.name)),
    };
    o.metric("patroni_version", "gauge", "Patroni semver without periods.", padded_version(&s.api_version));
    o.flag("patroni_postgres_running", "Value is 1 if Postgres is running, 0 otherwise.", queryable);
    o.metric(
        "patroni_postmaster_start_time",
        "gauge",
        "Epoch seconds since Postgres started.",
        secs(&s.postmaster_start_time),
    );
    o.flag("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", s.role == Role::Primary);
    o.metric(
        "patroni_xlog_location",
        "counter",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        if primary_pos { s.xlog_flush } else { 0 },
    );
    o.flag(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        s.role == Role::StandbyLeader,
    );
    o.flag("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.", s.role == Role::Replica);
    if let Some(vip) = &s.vip {
        o.flag("rampart_vip_held", "Value is 1 if this node's host has the virtual address, 0 otherwise.", vip.held);
        o.metric(
            "rampart_vip_changes_total",
            "counter",
            "Times this agent took or gave up the virtual address since it started.",
            vip.changes,
        );
    }
    o.flag(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        replica && s.is_sync_standby(),
    );
    o.flag(
        "patroni_quorum_standby",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        replica && s.is_quorum_standby(),
    );
    // As in `/patroni`: without streamed WAL the received position is the replayed one.
    let received = if s.xlog_received == 0 { s.xlog_replayed } else { s.xlog_received };
    o.metric(
        "patroni_xlog_received_location",
        "counter",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        if replica { received } else { 0 },
    );
    o.metric(
        "patroni_xlog_replayed_location",
        "counter",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        if replica { s.xlog_replayed } else { 0 },
    );
    o.metric(
        "patroni_xlog_replayed_timestamp",
        "gauge",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        if replica { secs(&s.replayed_timestamp) } else { 0.0 },
    );
    o.flag(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        replica && s.wal_replay_paused,
    );
    // Patroni reports these two only for PostgreSQL 9.6 and later (and so only while it runs).
    if server_version >= 90600 {
        let rs = s.replication_state.as_deref().filter(|_| replica);
        o.flag(
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            rs == Some("streaming"),
        );
        o.flag(
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            rs == Some("in archive recovery"),
        );
    }
    o.metric(
        "patroni_postgres_server_version",
        "gauge",
        "Version of Postgres (if running), 0 otherwise.",
        server_version,
    );
    o.flag(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        s.cluster_unlocked || s.cluster.is_none(),
    );
    o.flag(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        s.failsafe_active,
    );
    o.metric(
        "patroni_postgres_timeline",
        "gauge",
        "Postgres timeline of this node (if running), 0 otherwise.",
        if queryable { s.timeline } else { 0 },
    );
    o.metric(
        "patroni_dcs_last_seen",
        "gauge",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        s.dcs_last_seen.unwrap_or(0),
    );
    o.flag("patroni_pending_restart", "Value is 1 if the node needs a restart, 0 otherwise.", s.pending_restart);
    o.flag("patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.", s.paused);

    let _ = writeln!(o.text, "# HELP patroni_postgres_state Numeric representation of Postgres state.");
    let values: Vec<String> = STATES.iter().enumerate().map(|(i, (_, short))| format!("{i}={short}")).collect();
    let _ = writeln!(o.text, "# Values: {}", values.join(", "));
    let _ = writeln!(o.text, "# TYPE patroni_postgres_state gauge");
    let index = STATES.iter().position(|(long, _)| *long == state).map_or(-1, |i| i as i64);
    let _ = writeln!(o.text, "patroni_postgres_state{} {index}", o.labels);

    let priority = s.tags.priority();
    o.metric("patroni_failover_priority", "gauge", "Failover priority of this node.", priority);
    if let Some(b) = s.cluster.as_ref().and_then(|c| c.backup.as_ref()) {
        backup_metrics(&mut o, b);
    }
    o.text
}

/// Rampart's own: the cluster's last `rampart backup` (the `backup` key), the same on every
/// member; left out while the key is absent or the DCS view is lost.
fn backup_metrics(o: &mut Out, b: &rampart_core::backup::BackupReport) {
    use rampart_core::backup::BackupState;
    o.flag(
        "rampart_backup_running",
        "Value is 1 while a backup runs (rampart backup), 0 otherwise.",
        b.state == BackupState::Running,
    );
    o.metric("rampart_backup_last_start_time", "gauge", "Epoch seconds when the last backup started.", b.started_at);
    if let Some(took) = b.duration_secs() {
        o.flag(
            "rampart_backup_last_succeeded",
            "Value is 1 if the last finished backup succeeded, 0 otherwise.",
            b.state == BackupState::Succeeded,
        );
        o.metric("rampart_backup_last_duration_seconds", "gauge", "How long the last finished backup took.", took);
        o.metric(
            "rampart_backup_last_exit_code",
            "gauge",
            "Exit code of the last finished backup (-1: none, killed or not started).",
            b.exit_code.unwrap_or(-1),
        );
    }
    if let Some(at) = b.last_success_at {
        o.metric(
            "rampart_backup_last_success_time",
            "gauge",
            "Epoch seconds when the last successful backup ended.",
            at,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::health::tests::{primary, replica};
    use std::collections::BTreeMap;
    use std::time::Instant;

    /// Parses the exposition text strictly: every sample line is `name{labels} value` with a
    /// numeric value, every sample is preceded by its HELP and TYPE lines.
    pub(crate) fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        let mut typed = std::collections::BTreeSet::new();
        let mut helped = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap().to_string();
                assert!(matches!(it.next(), Some("gauge" | "counter")), "{line}");
                typed.insert(name);
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, rest) = line.split_once('{').unwrap_or_else(|| panic!("no labels: {line}"));
            let (labels, value) = rest.rsplit_once("} ").unwrap_or_else(|| panic!("bad sample: {line}"));
            assert!(labels.starts_with("scope=\"") && labels.contains(",name=\""), "{line}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
            assert!(typed.contains(name) && helped.contains(name), "{name} without HELP/TYPE");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            assert!(samples.insert(name.to_string(), v).is_none(), "duplicate {name}");
        }
        samples
    }

    #[test]
    fn the_last_backup_is_shown_when_the_key_is_there() {
        use rampart_core::backup::{BackupReport, BackupRole, BackupState};
        let now = Instant::now();
        let s = primary(now);
        assert!(!metrics_text(&s, true).contains("rampart_backup"), "no key, no metric");
        let report = BackupReport {
            member: "pg1".into(),
            role: BackupRole::Leader,
            program: "pgbackrest".into(),
            state: BackupState::Failed,
            started_at: 1_000.0,
            finished_at: Some(1_030.0),
            exit_code: Some(56),
            last_success_at: Some(500.0),
        };
        let cluster = rampart_core::Cluster { backup: Some(report.clone()), ..Default::default() };
        let m = parse_exposition(&metrics_text(&NodeSnapshot { cluster: Some(cluster.into()), ..primary(now) }, true));
        assert_eq!(m["rampart_backup_running"], 0.0);
        assert_eq!(m["rampart_backup_last_succeeded"], 0.0);
        assert_eq!(m["rampart_backup_last_duration_seconds"], 30.0);
        assert_eq!(m["rampart_backup_last_exit_code"], 56.0);
        assert_eq!(m["rampart_backup_last_success_time"], 500.0);
        let running = BackupReport { state: BackupState::Running, finished_at: None, exit_code: None, ..report };
        let cluster = rampart_core::Cluster { backup: Some(running), ..Default::default() };
        let m = parse_exposition(&metrics_text(&NodeSnapshot { cluster: Some(cluster.into()), ..primary(now) }, true));
        assert_eq!(m["rampart_backup_running"], 1.0);
        assert!(!m.contains_key("rampart_backup_last_duration_seconds"));
        assert_eq!(m["rampart_backup_last_success_time"], 500.0, "an old success stays visible");
    }

    #[test]
    fn the_virtual_address_is_shown_only_where_configured_with_its_changes() {
        let now = Instant::now();
        let m = parse_exposition(&metrics_text(&primary(now), true));
        assert!(!m.contains_key("rampart_vip_held"), "no vip section, no metric");
        let vip = crate::VipState { address: "10.0.0.100".into(), held: true, changes: 3 };
        let s = NodeSnapshot { vip: Some(vip), ..primary(now) };
        let m = parse_exposition(&metrics_text(&s, true));
        assert_eq!((m["rampart_vip_held"], m["rampart_vip_changes_total"]), (1.0, 3.0));
        let status = crate::status_json::patroni_status(&s, true);
        assert_eq!(status["vip"], serde_json::json!({"address": "10.0.0.100", "held": true}));
    }

    #[test]
    fn versions_and_timestamps() {
        assert_eq!(padded_version("4.1.4"), "040104");
        assert_eq!(padded_version("3.0.12"), "030012");
        assert_eq!(padded_version("4.0.0rc1"), "040000");
        assert_eq!(epoch_seconds("1970-01-01 00:00:10+00"), Some(10.0));
        assert_eq!(epoch_seconds("1970-01-01 02:00:10.5+02"), Some(10.5));
        assert_eq!(epoch_seconds("1970-01-01T00:01:00+05:30"), Some(60.0 - 5.5 * 3600.0));
        assert_eq!(epoch_seconds("nonsense"), None);
    }

    #[test]
    fn primary_metrics() {
        let mut s = primary(Instant::now());
        s.postmaster_start_time = Some("2026-01-01 00:00:00+00".into());
        s.dcs_last_seen = Some(1_700_000_000);
        s.tags.failover_priority = Some(3.into());
        let m = parse_exposition(&metrics_text(&s, true));
        assert_eq!(m["patroni_version"], 40104.0);
        assert_eq!(m["patroni_postgres_running"], 1.0);
        assert_eq!(m["patroni_primary"], 1.0);
        assert_eq!(m["patroni_replica"], 0.0);
        assert_eq!(m["patroni_xlog_location"], (500u64 << 20) as f64);
        assert_eq!(m["patroni_xlog_received_location"], 0.0);
        assert_eq!(m["patroni_postmaster_start_time"], 1_767_225_600.0);
        assert_eq!(m["patroni_postgres_server_version"], 160004.0);
        assert_eq!(m["patroni_postgres_timeline"], 2.0);
        assert_eq!(m["patroni_postgres_streaming"], 0.0);
        assert_eq!(m["patroni_dcs_last_seen"], 1_700_000_000.0);
        assert_eq!(m["patroni_postgres_state"], 5.0);
        assert_eq!(m["patroni_failover_priority"], 3.0);
        assert_eq!(m["patroni_failsafe_mode_is_active"], 0.0);
        for name in [
            "patroni_standby_leader",
            "patroni_sync_standby",
            "patroni_quorum_standby",
            "patroni_xlog_replayed_location",
            "patroni_xlog_replayed_timestamp",
            "patroni_xlog_paused",
            "patroni_postgres_in_archive_recovery",
            "patroni_cluster_unlocked",
            "patroni_pending_restart",
            "patroni_is_paused",
        ] {
            assert!(m.contains_key(name), "{name} missing");
        }
    }

    #[test]
    fn replica_and_dead_metrics() {
        let mut s = replica("r-sync", Instant::now());
        s.xlog_received = 0;
        s.xlog_replayed = 4096;
        s.wal_replay_paused = true;
        s.tags.nofailover = Some(true);
        s.replayed_timestamp = Some("1970-01-01 00:01:40+00".into());
        let m = parse_exposition(&metrics_text(&s, true));
        assert_eq!(m["patroni_replica"], 1.0);
        assert_eq!(m["patroni_sync_standby"], 1.0);
        assert_eq!(m["patroni_xlog_received_location"], 4096.0);
        assert_eq!(m["patroni_xlog_replayed_location"], 4096.0);
        assert_eq!(m["patroni_xlog_replayed_timestamp"], 100.0);
        assert_eq!(m["patroni_xlog_paused"], 1.0);
        assert_eq!(m["patroni_postgres_streaming"], 1.0);
        assert_eq!(m["patroni_failover_priority"], 0.0);

        // Postmaster gone: nothing of PostgreSQL's is reported, the state is unknown (-1).
        let m = parse_exposition(&metrics_text(&s, false));
        assert_eq!(m["patroni_postgres_running"], 0.0);
        assert_eq!(m["patroni_xlog_replayed_location"], 0.0);
        assert_eq!(m["patroni_postgres_server_version"], 0.0);
        assert_eq!(m["patroni_postgres_state"], -1.0);
        assert!(!m.contains_key("patroni_postgres_streaming"));

        // Odd names still give valid lines.
        let odd = NodeSnapshot { scope: "a\"b".into(), name: "c\\d\ne".into(), ..Default::default() };
        let m = parse_exposition(&metrics_text(&odd, false));
        assert_eq!(m["patroni_cluster_unlocked"], 1.0);
        assert_eq!(m["patroni_version"], 0.0);
    }
}
