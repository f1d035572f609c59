//! The `GET /patroni` body, which every GET health check also returns (with its own status).
//!
//! Invariant kept here: field names and shapes are Patroni's, because other members read this
//! body during a leader race and tools (patronictl, HAProxy templates, monitoring) parse it:
//! `xlog` is `{location}` on a primary and `{received_location, replayed_location,
//! replayed_timestamp, paused}` on a replica; flags (`pause`, `cluster_unlocked`,
//! `pending_restart` with its `pending_restart_reason`, `sync_standby`, `quorum_standby`) appear
//! only when true; PostgreSQL facts
//! (positions, timeline, versions) appear only while PostgreSQL is running and its postmaster is
//! alive, so a dead server is never described with stale numbers.

use rampart_core::Tags;
use serde::Serialize;
use serde_json::Value;

use crate::snapshot::{NodeSnapshot, ReplicationConn};

/// WAL positions, shaped by role.
#[derive(Serialize)]
#[serde(untagged)]
enum Xlog<'a> {
    Primary { location: u64 },
    Replica { received_location: u64, replayed_location: u64, replayed_timestamp: Option<&'a str>, paused: bool },
}

#[derive(Serialize)]
struct PatroniInfo<'a> {
    version: &'a str,
    scope: &'a str,
    name: &'a str,
}

fn not(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct Status<'a> {
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    postmaster_start_time: Option<&'a str>,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xlog: Option<Xlog<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication_state: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    replication: &'a [ReplicationConn],
    #[serde(skip_serializing_if = "not")]
    sync_standby: bool,
    #[serde(skip_serializing_if = "not")]
    quorum_standby: bool,
    #[serde(skip_serializing_if = "not")]
    pause: bool,
    #[serde(skip_serializing_if = "not")]
    cluster_unlocked: bool,
    #[serde(skip_serializing_if = "not")]
    failsafe_mode_is_active: bool,
    dcs_last_seen: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_system_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "not")]
    pending_restart: bool,
    /// `{name: {old_value, new_value}}`, with `pending_restart`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_restart_reason: Option<Value>,
    /// Rampart's own field (Patroni clients ignore it): this member keeps out of leader races
    /// for now, so others must not wait for it.
    #[serde(skip_serializing_if = "not")]
    failover_backoff: bool,
    /// Patroni's field: `watchdog.mode` is `required` and the watchdog is not usable, so this
    /// member is no candidate for a switchover or failover.
    #[serde(skip_serializing_if = "not")]
    watchdog_failed: bool,
    /// Rampart's own field: WAL replay is paused for insufficient hot-standby settings, so this
    /// member is no candidate for a switchover or failover until it was restarted.
    #[serde(skip_serializing_if = "not")]
    replay_blocked: bool,
    /// Rampart's own field: the virtual address (`vip`) and whether this member's host has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    vip: Option<Value>,
    patroni: PatroniInfo<'a>,
}

/// The `/patroni` JSON for node state `s` whose postmaster is `alive`.
pub fn patroni_status(s: &NodeSnapshot, alive: bool) -> Value {
    let queryable = alive && s.is_running();
    // Patroni reports `unknown` when it believes PostgreSQL runs but cannot query it.
    let state = if s.is_running() && !alive { "unknown" } else { s.state.as_str() };
    let replica = queryable && s.in_recovery;
    let xlog = match queryable {
        false => None,
        true if s.in_recovery => Some(Xlog::Replica {
            // Patroni shows the replayed position when nothing was received by streaming.
            received_location: if s.xlog_received == 0 { s.xlog_replayed } else { s.xlog_received },
            replayed_location: s.xlog_replayed,
            replayed_timestamp: s.replayed_timestamp.as_deref(),
            paused: s.wal_replay_paused,
        }),
        true => Some(Xlog::Primary { location: s.xlog_flush }),
    };
    let body = Status {
        state,
        postmaster_start_time: s.postmaster_start_time.as_deref().filter(|_| queryable),
        role: s.role.as_str(),
        server_version: (queryable && s.server_version > 0).then_some(s.server_version),
        xlog,
        timeline: (queryable && s.timeline > 0).then_some(s.timeline),
        replication_state: s.replication_state.as_deref().filter(|_| replica),
        replication: if queryable { &s.replication } else { &[] },
        sync_standby: replica && s.is_sync_standby(),
        quorum_standby: replica && s.is_quorum_standby(),
        pause: s.paused,
        cluster_unlocked: s.cluster_unlocked || s.cluster.is_none(),
        failsafe_mode_is_active: s.failsafe_active,
        dcs_last_seen: s.dcs_last_seen.unwrap_or(0),
        tags: (s.tags != Tags::default()).then_some(&s.tags),
        database_system_identifier: Some(s.database_system_identifier.as_str()).filter(|id| !id.is_empty()),
        pending_restart: s.pending_restart,
        pending_restart_reason: (s.pending_restart && !s.pending_restart_reason.is_empty()).then(|| {
            s.pending_restart_reason
                .iter()
                .map(|(name, old, new)| (name.clone(), serde_json::json!({"old_value": old, "new_value": new})))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }),
        failover_backoff: s.failover_backoff,
        watchdog_failed: s.watchdog_failed,
        replay_blocked: replica && s.replay_blocked,
        vip: s.vip.as_ref().map(|v| serde_json::json!({"address": v.address, "held": v.held})),
        patroni: PatroniInfo { version: &s.api_version, scope: &s.scope, name: &s.name },
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::{primary, replica};
    use serde_json::json;
    use std::time::Instant;

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        k
    }

    #[test]
    fn primary_body() {
        let now = Instant::now();
        let mut s = primary(now);
        s.postmaster_start_time = Some("2026-01-01 00:00:00.000+00:00".into());
        s.database_system_identifier = "7301234567890123456".into();
        s.dcs_last_seen = Some(1_700_000_000);
        s.replication = vec![ReplicationConn {
            usename: "replicator".into(),
            application_name: "r1".into(),
            client_addr: Some("10.0.0.2".into()),
            state: "streaming".into(),
            sync_state: "async".into(),
            sync_priority: 0,
        }];
        let v = patroni_status(&s, true);
        assert_eq!(
            keys(&v),
            [
                "database_system_identifier",
                "dcs_last_seen",
                "patroni",
                "postmaster_start_time",
                "replication",
                "role",
                "server_version",
                "state",
                "timeline",
                "xlog"
            ]
        );
        assert_eq!(v["state"], "running");
        assert_eq!(v["role"], "primary");
        assert_eq!(v["xlog"], json!({"location": 500u64 << 20}));
        assert_eq!(v["timeline"], 2);
        assert_eq!(v["server_version"], 160004);
        assert_eq!(v["dcs_last_seen"], 1_700_000_000u64);
        assert_eq!(v["patroni"], json!({"version": "4.1.4", "scope": "demo", "name": "p"}));
        assert_eq!(
            v["replication"][0],
            json!({"usename": "replicator", "application_name": "r1", "client_addr": "10.0.0.2",
                   "state": "streaming", "sync_state": "async", "sync_priority": 0})
        );
    }

    #[test]
    fn replica_body_and_flags() {
        let now = Instant::now();
        let mut s = replica("r-sync", now);
        s.xlog_received = 0;
        s.xlog_replayed = 42;
        s.wal_replay_paused = true;
        s.paused = true;
        s.pending_restart = true;
        s.pending_restart_reason = vec![("max_connections".into(), "100".into(), "150".into())];
        s.cluster_unlocked = true;
        s.tags.nofailover = Some(true);
        let v = patroni_status(&s, true);
        assert_eq!(
            v["xlog"],
            json!({"received_location": 42, "replayed_location": 42, "replayed_timestamp": null, "paused": true})
        );
        assert_eq!(v["replication_state"], "streaming");
        assert_eq!(v["sync_standby"], true);
        assert_eq!(v["pause"], true);
        assert_eq!(v["pending_restart"], true);
        assert_eq!(
            v["pending_restart_reason"],
            serde_json::json!({"max_connections": {"old_value": "100", "new_value": "150"}})
        );
        assert_eq!(v["cluster_unlocked"], true);
        assert_eq!(v["tags"], json!({"nofailover": true}));
        assert_eq!(v["dcs_last_seen"], 0);
        assert!(v.get("quorum_standby").is_none());
        assert!(v.get("replication").is_none());
    }

    #[test]
    fn dead_or_stopped_server_shows_no_positions() {
        let now = Instant::now();
        let v = patroni_status(&primary(now), false);
        assert_eq!(v["state"], "unknown");
        assert_eq!(v["role"], "primary");
        for gone in ["xlog", "timeline", "server_version", "pause", "cluster_unlocked", "sync_standby"] {
            assert!(v.get(gone).is_none(), "{gone}: {v}");
        }
        let mut stopped = replica("r1", now);
        stopped.state = "stopped".into();
        let v = patroni_status(&stopped, false);
        assert_eq!(v["state"], "stopped");
        assert!(v.get("xlog").is_none() && v.get("replication_state").is_none());
        // With no DCS view the cluster counts as unlocked, as in Patroni.
        let v = patroni_status(&NodeSnapshot::default(), false);
        assert_eq!(v["cluster_unlocked"], true);
        assert_eq!(v["patroni"]["name"], "");
    }
}
