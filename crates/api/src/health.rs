//! The health-check decision: path + query + snapshot + postmaster liveness + now → 200 or 503.
//!
//! This is what HAProxy, Kubernetes and the other members rely on, so it is a pure function,
//! table-tested below, with Patroni's routing by substring (`/master` is `/primary`,
//! `/replica-foo` is `/replica`, ...).
//!
//! Invariants kept here:
//! * `/primary` (and `/`, `/read-write`, `/master`) answers 200 only while the node holds the
//!   leader lock *and* its postmaster is alive *and* PostgreSQL is running out of recovery; in
//!   particular a dead postmaster turns it to 503 at once (Patroni waits for the next HA cycle);
//! * a check never answers 200 for a node whose postmaster is gone, except `/liveness`, which is
//!   about the agent rather than PostgreSQL;
//! * tag filters can only turn a 200 into a 503, never the reverse.

use std::time::Instant;

use rampart_core::Tags;
use serde_json::Value;

use crate::query::HealthQuery;
use crate::snapshot::NodeSnapshot;
use rampart_core::Role;

/// HTTP 200.
pub const OK: u16 = 200;
/// HTTP 503.
pub const UNAVAILABLE: u16 = 503;

/// A health check, as selected from the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `/`, `/primary`, `/read-write`, `/master`.
    Primary,
    /// `/standby-leader`, `/standby_leader`.
    StandbyLeader,
    /// `/leader`.
    Leader,
    /// `/replica`.
    Replica,
    /// `/read-only`.
    ReadOnly,
    /// `/health`.
    Health,
    /// `/sync`, `/synchronous`.
    Sync,
    /// `/quorum`.
    Quorum,
    /// `/async`, `/asynchronous`.
    Async,
    /// `/read-only-sync`, `/read-only-synchronous`.
    ReadOnlySync,
    /// `/read-only-quorum`.
    ReadOnlyQuorum,
    /// Anything else: 503 (Patroni answers unknown GET paths with the status body and 503).
    Unknown,
}

impl Check {
    /// Picks the check for `path` (without the query string) in Patroni's order: substring
    /// matches first (`standby_leader`/`standby-leader`, `leader`, `master`/`primary`/`read-write`,
    /// `replica`, `read-only` without `sync`/`quorum`, `health`), then exact paths.
    pub fn from_path(path: &str) -> Check {
        let path = if path == "/" { "/primary" } else { path };
        let has = |s: &str| path.contains(s);
        if has("standby_leader") || has("standby-leader") {
            Check::StandbyLeader
        } else if has("leader") {
            Check::Leader
        } else if has("master") || has("primary") || has("read-write") {
            Check::Primary
        } else if has("replica") {
            Check::Replica
        } else if has("read-only") && !has("sync") && !has("quorum") {
            Check::ReadOnly
        } else if has("health") {
            Check::Health
        } else {
            match path {
                "/sync" | "/synchronous" => Check::Sync,
                "/quorum" => Check::Quorum,
                "/async" | "/asynchronous" => Check::Async,
                "/read-only-sync" | "/read-only-synchronous" => Check::ReadOnlySync,
                "/read-only-quorum" => Check::ReadOnlyQuorum,
                _ => Check::Unknown,
            }
        }
    }

    /// Whether `?tag_` filters are ignored for this check (lock-based checks).
    fn ignores_tags(self) -> bool {
        matches!(self, Check::Primary | Check::StandbyLeader | Check::Leader)
    }
}

/// PostgreSQL is up, queryable and out of recovery.
fn runs_as_primary(s: &NodeSnapshot, alive: bool) -> bool {
    alive && s.is_running() && !s.in_recovery
}

/// `/leader`: the node holds the lock and its postmaster is alive. In pause with no DCS view the
/// lock cannot be renewed, so (as in Patroni) the decision falls back to PostgreSQL's own role.
pub fn leader_ok(s: &NodeSnapshot, alive: bool, now: Instant) -> bool {
    if s.paused && s.cluster.is_none() {
        return runs_as_primary(s, alive);
    }
    s.holds_lock(now) && alive
}

/// `/primary`: leader and running out of recovery.
pub fn primary_ok(s: &NodeSnapshot, alive: bool, now: Instant) -> bool {
    leader_ok(s, alive, now) && runs_as_primary(s, alive)
}

/// `/replica`: a running, load-balanced replica within the query's lag and replication state,
/// whose replay is not stuck for insufficient settings.
pub fn replica_ok(q: &HealthQuery, s: &NodeSnapshot, alive: bool) -> bool {
    alive
        && s.is_running()
        && s.in_recovery
        && s.role != Role::StandbyLeader
        && !s.replay_blocked
        && !s.tags.noloadbalance
        && q.lag.is_none_or(|max| s.replay_lag() <= max)
        && q.replication_state.as_ref().is_none_or(|want| s.replication_state.as_ref() == Some(want))
}

/// Whether every `?tag_<key>=<value>` filter matches the node's tags, comparing
/// lowercase text (`true`, `5`, ...). A missing tag never matches.
pub fn tags_match(filters: &[(String, String)], tags: &Tags) -> bool {
    if filters.is_empty() {
        return true;
    }
    let Ok(Value::Object(map)) = serde_json::to_value(tags) else {
        return false;
    };
    filters.iter().all(|(key, want)| {
        let have = match map.get(key) {
            None | Some(Value::Null) => return false,
            Some(Value::String(s)) => s.to_lowercase(),
            Some(other) => other.to_string().to_lowercase(),
        };
        have == want.to_lowercase()
    })
}

/// Status code of health check `check` for a node in state `s` whose postmaster is `alive`.
pub fn check_status(check: Check, q: &HealthQuery, s: &NodeSnapshot, alive: bool, now: Instant) -> u16 {
    let dcs = s.cluster.is_some();
    let primary = primary_ok(s, alive, now);
    let standby_leader = leader_ok(s, alive, now) && s.role == Role::StandbyLeader && s.is_running();
    let replica = replica_ok(q, s, alive);
    let sync = dcs && s.is_sync_standby();
    let quorum = dcs && s.is_quorum_standby();
    let ok = match check {
        Check::Primary => primary,
        Check::StandbyLeader => standby_leader,
        Check::Leader => leader_ok(s, alive, now),
        Check::Replica => replica,
        Check::ReadOnly => primary || standby_leader || replica,
        Check::Health => alive && s.is_running(),
        Check::Sync => sync && replica,
        Check::Quorum => quorum && replica,
        Check::Async => dcs && !sync && !quorum && replica,
        Check::ReadOnlySync => dcs && (primary || standby_leader || (sync && replica)),
        Check::ReadOnlyQuorum => dcs && (primary || standby_leader || (quorum && replica)),
        Check::Unknown => false,
    };
    if ok && (check.ignores_tags() || tags_match(&q.tags, &s.tags)) {
        OK
    } else {
        UNAVAILABLE
    }
}

/// `/liveness`: the HA loop is not stuck. 200 while the next cycle is due
/// (`last_loop + loop_wait`) plus `ttl` on a running primary or `2 * ttl` otherwise, or when the
/// cluster is paused. Independent of PostgreSQL's health.
pub fn liveness_status(s: &NodeSnapshot, alive: bool, now: Instant) -> u16 {
    if s.paused {
        return OK;
    }
    let Some(last) = s.last_loop else { return UNAVAILABLE };
    let primary = s.role == Role::Primary && alive && s.is_running();
    let grace = s.loop_wait + if primary { s.ttl } else { s.ttl * 2 };
    match last.checked_add(grace) {
        Some(deadline) if now >= deadline => UNAVAILABLE,
        _ => OK,
    }
}

/// `/readiness`: the leader, or a running replica that streams and is within `?lag=`
/// (default `maximum_lag_on_failover`) of the leader's DCS position; `?mode=write` measures the
/// received position, the default (`apply`) the replayed one. A replica without a DCS view is
/// not ready.
pub fn readiness_status(q: &HealthQuery, s: &NodeSnapshot, alive: bool, now: Instant) -> u16 {
    if leader_ok(s, alive, now) {
        return OK;
    }
    if !(alive && s.is_running()) || s.cluster.is_none() || s.replication_state.as_deref() != Some("streaming") {
        return UNAVAILABLE;
    }
    let max = q.lag.unwrap_or(s.maximum_lag_on_failover);
    let position = if q.mode.as_deref() == Some("write") { s.xlog_received } else { s.xlog_replayed };
    if s.cluster_optime.saturating_sub(position) <= max {
        OK
    } else {
        UNAVAILABLE
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rampart_core::model::SyncState;
    use rampart_core::{Cluster, DynamicConfig};
    use std::sync::Arc;
    use std::time::Duration;

    const MB: u64 = 1 << 20;

    /// A cluster with `synchronous_mode: true` and `sync_standby: "r-sync"`.
    pub(crate) fn sync_cluster() -> Arc<Cluster> {
        let cfg = DynamicConfig { synchronous_mode: Some(rampart_core::SyncMode::On), ..Default::default() };
        Arc::new(Cluster {
            config: Some(cfg),
            leader: Some(rampart_core::model::Leader { name: "p".into(), lease: 1, mod_revision: 1 }),
            sync: Some(SyncState { leader: Some("p".into()), sync_standby: Some("r-sync".into()), quorum: None }),
            ..Default::default()
        })
    }

    pub(crate) fn primary(now: Instant) -> NodeSnapshot {
        NodeSnapshot {
            scope: "demo".into(),
            name: "p".into(),
            api_version: "4.1.4".into(),
            state: "running".into(),
            role: "primary".into(),
            timeline: 2,
            xlog_flush: 500 * MB,
            server_version: 160004,
            leader_until: Some(now + Duration::from_secs(20)),
            last_loop: Some(now),
            ttl: Duration::from_secs(30),
            loop_wait: Duration::from_secs(10),
            maximum_lag_on_failover: MB,
            cluster_optime: 500 * MB,
            cluster: Some(sync_cluster()),
            ..Default::default()
        }
    }

    pub(crate) fn replica(name: &str, now: Instant) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            role: "replica".into(),
            in_recovery: true,
            xlog_flush: 0,
            xlog_received: 500 * MB,
            xlog_replayed: 500 * MB,
            replication_state: Some("streaming".into()),
            leader_until: None,
            ..primary(now)
        }
    }

    /// The scenarios of the table, in column order, with their postmaster liveness.
    fn scenarios(now: Instant) -> Vec<(&'static str, NodeSnapshot, bool)> {
        let mut tags = Tags { noloadbalance: true, ..Default::default() };
        tags.other.insert("zone".into(), Value::from("A"));
        vec![
            ("primary with lock", primary(now), true),
            (
                "primary, lock expired",
                NodeSnapshot { leader_until: Some(now - Duration::from_secs(1)), ..primary(now) },
                true,
            ),
            ("primary, postmaster dead", primary(now), false),
            ("streaming replica", replica("r1", now), true),
            (
                "lagging replica",
                NodeSnapshot { xlog_received: 400 * MB, xlog_replayed: 100 * MB, ..replica("r1", now) },
                true,
            ),
            ("noloadbalance replica", NodeSnapshot { tags, ..replica("r1", now) }, true),
            ("stopped node", NodeSnapshot { state: "stopped".into(), ..replica("r1", now) }, false),
            ("sync replica", replica("r-sync", now), true),
            (
                "standby leader",
                NodeSnapshot {
                    role: "standby_leader".into(),
                    leader_until: Some(now + Duration::from_secs(20)),
                    ..replica("p", now)
                },
                true,
            ),
        ]
    }

    #[test]
    fn health_table() {
        let now = Instant::now();
        let x = UNAVAILABLE;
        #[rustfmt::skip]
        let table: &[(&str, [u16; 9])] = &[
            //                           lock  expd  dead  strm  lagg  nolb  stop  sync  stby
            ("/",                       [OK,   x,    x,    x,    x,    x,    x,    x,    x]),
            ("/primary",                [OK,   x,    x,    x,    x,    x,    x,    x,    x]),
            ("/read-write",             [OK,   x,    x,    x,    x,    x,    x,    x,    x]),
            ("/master",                 [OK,   x,    x,    x,    x,    x,    x,    x,    x]),
            ("/primary?tag_zone=B",     [OK,   x,    x,    x,    x,    x,    x,    x,    x]),
            ("/leader",                 [OK,   x,    x,    x,    x,    x,    x,    x,    OK]),
            ("/standby-leader",         [x,    x,    x,    x,    x,    x,    x,    x,    OK]),
            ("/standby_leader",         [x,    x,    x,    x,    x,    x,    x,    x,    OK]),
            ("/replica",                [x,    x,    x,    OK,   OK,   x,    x,    OK,   x]),
            ("/replica?lag=1MB",        [x,    x,    x,    OK,   x,    x,    x,    OK,   x]),
            ("/replica?lag=300MB",      [x,    x,    x,    OK,   x,    x,    x,    OK,   x]),
            ("/replica?lag=400MB",      [x,    x,    x,    OK,   OK,   x,    x,    OK,   x]),
            ("/replica?replication_state=streaming", [x, x, x, OK, OK, x,    x,    OK,   x]),
            ("/replica?replication_state=in%20archive%20recovery", [x, x, x, x, x, x, x, x,    x]),
            ("/read-only",              [OK,   x,    x,    OK,   OK,   x,    x,    OK,   OK]),
            ("/read-only?lag=1MB",      [OK,   x,    x,    OK,   x,    x,    x,    OK,   OK]),
            ("/health",                 [OK,   OK,   x,    OK,   OK,   OK,   x,    OK,   OK]),
            ("/sync",                   [x,    x,    x,    x,    x,    x,    x,    OK,   x]),
            ("/synchronous",            [x,    x,    x,    x,    x,    x,    x,    OK,   x]),
            ("/async",                  [x,    x,    x,    OK,   OK,   x,    x,    x,    x]),
            ("/asynchronous?lag=1MB",   [x,    x,    x,    OK,   x,    x,    x,    x,    x]),
            ("/quorum",                 [x,    x,    x,    x,    x,    x,    x,    x,    x]),
            ("/read-only-sync",         [OK,   x,    x,    x,    x,    x,    x,    OK,   OK]),
            ("/read-only-synchronous",  [OK,   x,    x,    x,    x,    x,    x,    OK,   OK]),
            ("/read-only-quorum",       [OK,   x,    x,    x,    x,    x,    x,    x,    OK]),
            ("/nonsense",               [x,    x,    x,    x,    x,    x,    x,    x,    x]),
            ("/sync/",                  [x,    x,    x,    x,    x,    x,    x,    x,    x]),
        ];
        let scenarios = scenarios(now);
        for (target, want) in table {
            let (path, query) = target.split_once('?').map_or((*target, None), |(p, q)| (p, Some(q)));
            let q = HealthQuery::parse(query);
            for ((name, snap, alive), want) in scenarios.iter().zip(want) {
                let got = check_status(Check::from_path(path), &q, snap, *alive, now);
                assert_eq!(got, *want, "{target} for {name}");
            }
        }
    }

    #[test]
    fn a_replica_paused_for_insufficient_settings_is_no_replica_route() {
        let now = Instant::now();
        let blocked = NodeSnapshot { replay_blocked: true, replication_state: None, ..replica("r1", now) };
        let q = HealthQuery::parse(None);
        for path in ["/replica", "/read-only", "/async", "/readiness"] {
            let got = if path == "/readiness" {
                readiness_status(&q, &blocked, true, now)
            } else {
                check_status(Check::from_path(path), &q, &blocked, true, now)
            };
            assert_eq!(got, UNAVAILABLE, "{path}");
        }
        assert_eq!(check_status(Check::Health, &q, &blocked, true, now), OK, "PostgreSQL itself runs");
    }

    #[test]
    fn routing_by_substring() {
        let cases = [
            ("/", Check::Primary),
            ("/master", Check::Primary),
            ("/primary/x", Check::Primary),
            ("/leader", Check::Leader),
            ("/standby-leader", Check::StandbyLeader),
            ("/replica-zone", Check::Replica),
            ("/read-only", Check::ReadOnly),
            ("/read-only-sync", Check::ReadOnlySync),
            ("/read-only-quorum", Check::ReadOnlyQuorum),
            ("/healthz", Check::Health),
            ("/quorum", Check::Quorum),
            ("/asynchronous", Check::Async),
            ("/metrics", Check::Unknown),
            ("", Check::Unknown),
        ];
        for (path, want) in cases {
            assert_eq!(Check::from_path(path), want, "{path}");
        }
    }

    #[test]
    fn tag_filters() {
        let now = Instant::now();
        let mut tags = Tags { nofailover: Some(true), failover_priority: Some(3.into()), ..Default::default() };
        tags.other.insert("zone".into(), Value::from("Eu-1"));
        tags.other.insert("nothing".into(), Value::Null);
        let s = NodeSnapshot { tags, ..replica("r1", now) };
        let status = |query: &str| check_status(Check::Replica, &HealthQuery::parse(Some(query)), &s, true, now);
        assert_eq!(status("tag_zone=eu-1"), OK);
        assert_eq!(status("tag_zone=EU-1&tag_nofailover=TRUE"), OK);
        assert_eq!(status("tag_failover_priority=3"), OK);
        assert_eq!(status("tag_zone=eu-2"), UNAVAILABLE);
        assert_eq!(status("tag_missing=x"), UNAVAILABLE);
        assert_eq!(status("tag_nothing=none"), UNAVAILABLE);
        // A false boolean tag is not set at all (Patroni filters falsy built-in tags out).
        assert_eq!(status("tag_noloadbalance=false"), UNAVAILABLE);
        // An empty value is ignored, like parse_qs does.
        assert_eq!(status("tag_zone="), OK);
        // Tags apply to /health and /read-only but not to lock-based checks.
        let p = primary(now);
        let q = HealthQuery::parse(Some("tag_zone=x"));
        assert_eq!(check_status(Check::Health, &q, &p, true, now), UNAVAILABLE);
        assert_eq!(check_status(Check::ReadOnly, &q, &p, true, now), UNAVAILABLE);
        assert_eq!(check_status(Check::Leader, &q, &p, true, now), OK);
    }

    #[test]
    fn quorum_mode() {
        let now = Instant::now();
        let mut c = (*sync_cluster()).clone();
        c.config.as_mut().unwrap().synchronous_mode = Some(rampart_core::SyncMode::Quorum);
        let c = Arc::new(c);
        let q = HealthQuery::default();
        let voter = NodeSnapshot { cluster: Some(c.clone()), ..replica("r-sync", now) };
        let other = NodeSnapshot { cluster: Some(c), ..replica("r1", now) };
        assert_eq!(check_status(Check::Quorum, &q, &voter, true, now), OK);
        assert_eq!(check_status(Check::ReadOnlyQuorum, &q, &voter, true, now), OK);
        assert_eq!(check_status(Check::Sync, &q, &voter, true, now), UNAVAILABLE);
        assert_eq!(check_status(Check::Async, &q, &voter, true, now), UNAVAILABLE);
        assert_eq!(check_status(Check::Quorum, &q, &other, true, now), UNAVAILABLE);
        assert_eq!(check_status(Check::Async, &q, &other, true, now), OK);
    }

    #[test]
    fn without_a_dcs_view() {
        let now = Instant::now();
        let q = HealthQuery::default();
        // Sync-type checks need the DCS; plain replica checks do not.
        let r = NodeSnapshot { cluster: None, ..replica("r-sync", now) };
        assert_eq!(check_status(Check::Replica, &q, &r, true, now), OK);
        assert_eq!(check_status(Check::Async, &q, &r, true, now), UNAVAILABLE);
        assert_eq!(check_status(Check::Sync, &q, &r, true, now), UNAVAILABLE);
        // Paused and cut off from the DCS: the lock has lapsed, PostgreSQL's role decides.
        let p = NodeSnapshot { cluster: None, paused: true, leader_until: None, ..primary(now) };
        assert_eq!(check_status(Check::Primary, &q, &p, true, now), OK);
        assert_eq!(check_status(Check::Primary, &q, &p, false, now), UNAVAILABLE);
        let not_paused = NodeSnapshot { paused: false, ..p };
        assert_eq!(check_status(Check::Primary, &q, &not_paused, true, now), UNAVAILABLE);
    }

    #[test]
    fn liveness_table() {
        let now = Instant::now();
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        let cases: Vec<(&str, NodeSnapshot, bool, u16)> = vec![
            ("primary, fresh loop", primary(now), true, OK),
            ("primary, 39 s ago", NodeSnapshot { last_loop: ago(39), ..primary(now) }, true, OK),
            ("primary, 40 s ago", NodeSnapshot { last_loop: ago(40), ..primary(now) }, true, UNAVAILABLE),
            ("replica, 69 s ago", NodeSnapshot { last_loop: ago(69), ..replica("r1", now) }, true, OK),
            ("replica, 70 s ago", NodeSnapshot { last_loop: ago(70), ..replica("r1", now) }, true, UNAVAILABLE),
            // A primary whose postmaster is gone is treated like a replica: more patience.
            ("dead primary, 50 s ago", NodeSnapshot { last_loop: ago(50), ..primary(now) }, false, OK),
            ("paused, stuck", NodeSnapshot { last_loop: ago(1000), paused: true, ..primary(now) }, true, OK),
            ("no loop yet", NodeSnapshot { last_loop: None, ..primary(now) }, true, UNAVAILABLE),
            ("nothing known", NodeSnapshot::default(), false, UNAVAILABLE),
        ];
        for (name, s, alive, want) in cases {
            assert_eq!(liveness_status(&s, alive, now), want, "{name}");
        }
    }

    #[test]
    fn readiness_table() {
        let now = Instant::now();
        let lagging = NodeSnapshot { xlog_received: 500 * MB, xlog_replayed: 498 * MB, ..replica("r1", now) };
        let cases: Vec<(&str, NodeSnapshot, bool, &str, u16)> = vec![
            ("leader", primary(now), true, "", OK),
            ("leader, dead postmaster", primary(now), false, "", UNAVAILABLE),
            ("expired leader", NodeSnapshot { leader_until: None, ..primary(now) }, true, "", UNAVAILABLE),
            ("streaming replica", replica("r1", now), true, "", OK),
            ("replica 2 MB behind, default 1 MB", lagging.clone(), true, "", UNAVAILABLE),
            ("replica 2 MB behind, lag=4MB", lagging.clone(), true, "lag=4MB", OK),
            ("replica received all, mode=write", lagging.clone(), true, "mode=write", OK),
            (
                "archive recovery",
                NodeSnapshot { replication_state: Some("in archive recovery".into()), ..replica("r1", now) },
                true,
                "",
                UNAVAILABLE,
            ),
            ("no DCS view", NodeSnapshot { cluster: None, ..replica("r1", now) }, true, "", UNAVAILABLE),
            ("stopped", NodeSnapshot { state: "stopped".into(), ..replica("r1", now) }, false, "", UNAVAILABLE),
        ];
        for (name, s, alive, query, want) in cases {
            assert_eq!(readiness_status(&HealthQuery::parse(Some(query)), &s, alive, now), want, "{name}");
        }
    }
}
