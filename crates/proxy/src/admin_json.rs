//! `GET /stats.json` of the admin port: the counters of `/metrics` plus the member table of
//! `/stats`, for scripts and tests.
//!
//! Invariant: every value a person sees on `/stats` is here too, under a stable key, and values
//! that may be unknown (leader, view age, lag, timeline, address) are `null` rather than a
//! made-up zero, so "no leader" is never mistaken for a leader called "".
//!
//! The pools are under `pools` (one object per database, user and backend, the figures of
//! `SHOW POOLS`) and `pool_stats` (one per database, those of `SHOW STATS`), both empty when
//! nothing is pooled.

use serde_json::{json, Value};

use crate::admin_view::{MemberRow, Overview};
use crate::clients::DbTotals;
use crate::pools_view::{PoolLine, PoolsView};
use crate::split::state::SplitFigures;
use crate::stats::{Snapshot, HOLD_BUCKETS};

/// Content type of the body.
pub const CONTENT_TYPE: &str = "application/json";

fn member(m: &MemberRow) -> Value {
    json!({
        "name": m.name,
        "in_view": m.in_view,
        "leader": m.leader,
        "role": m.role,
        "state": m.state,
        "timeline": m.timeline,
        "lag_bytes": m.lag,
        "address": m.address,
        "tags": { "noloadbalance": m.noloadbalance, "nofailover": m.nofailover },
        "rw_route": m.rw_route,
        "ro_route": m.ro_route,
        "connections": { "rw": m.active_rw, "ro": m.active_ro, "total": m.total },
        "bytes": { "to_server": m.bytes_to_server, "to_client": m.bytes_to_client },
    })
}

fn pool(l: &PoolLine) -> Value {
    json!({
        "database": l.database,
        "user": l.user,
        "backend": l.backend,
        "retired": l.retired,
        "clients": { "active": l.cl_active, "waiting": l.cl_waiting },
        "servers": { "active": l.sv_active, "idle": l.sv_idle, "login": l.sv_login },
        "max_wait_seconds": l.max_wait.as_secs_f64(),
    })
}

fn pool_stats(t: &DbTotals) -> Value {
    json!({
        "database": t.database,
        "transactions": t.xacts,
        "queries": t.queries,
        "received_bytes": t.received,
        "sent_bytes": t.sent,
        "in_transaction_seconds": t.xact_us as f64 / 1e6,
        "client_wait_seconds": t.wait_us as f64 / 1e6,
    })
}

/// The read/write splitting counts (`null` when `load_balance` is off).
fn split(f: Option<&SplitFigures>) -> Value {
    let Some(f) = f else { return Value::Null };
    let per_backend: Vec<Value> =
        f.per_backend.iter().map(|(addr, n)| json!({ "backend": addr, "statements": n })).collect();
    json!({
        "to_replicas": f.to_replica,
        "to_primary": f.to_primary,
        "reads_kept_on_primary": f.reads_kept_on_primary,
        "per_backend": per_backend,
        "cache": {
            "hits": f.cache.hits,
            "misses": f.cache.misses,
            "entries": f.cache.entries,
            "parse_seconds": f.cache.parse_ns as f64 / 1e9,
        },
    })
}

/// The proxies' virtual address in `/stats.json` (`vip`): the address, whether this proxy's host
/// has it, who the cluster's claim names, and the changes counted.
pub fn vip_json(f: &crate::admin::VipFigures) -> Value {
    json!({
        "address": f.address,
        "held": f.held,
        "holder": f.holder,
        "me": f.me,
        "changes": f.changes,
    })
}

/// The `/stats.json` body; `split` when the read-write port splits reads from writes.
pub fn stats_json(s: &Snapshot, o: &Overview, p: &PoolsView, split_figures: Option<&SplitFigures>) -> Value {
    let backends: Vec<Value> = s
        .backends
        .iter()
        .map(|b| {
            json!({
                "backend": b.name,
                "port": b.port.as_str(),
                "active": b.active,
                "total": b.total,
                "bytes_to_server": b.bytes_to_server,
                "bytes_to_client": b.bytes_to_client,
            })
        })
        .collect();
    let decisions: Vec<Value> = s
        .decisions
        .iter()
        .map(|(port, decision, n)| json!({ "port": port.as_str(), "outcome": decision.as_str(), "count": n }))
        .collect();
    let buckets: Vec<Value> =
        HOLD_BUCKETS.iter().zip(s.holds.buckets.iter()).map(|(le, n)| json!({ "le": le, "count": n })).collect();
    json!({
        "scope": o.scope,
        "uptime_seconds": s.uptime.as_secs_f64(),
        "leader": o.leader,
        "view": {
            "age_seconds": o.view_age.map(|a| a.as_secs_f64()),
            "ttl_seconds": o.ttl.as_secs(),
            "freshness": o.freshness.as_str(),
        },
        "routes": { "primary": o.primary_route, "replicas": o.replica_routes },
        "members": o.members.iter().map(member).collect::<Vec<_>>(),
        "backends": backends,
        "accepted": { "rw": s.accepted_rw, "ro": s.accepted_ro },
        "decisions": decisions,
        "holds": {
            "count": s.holds.count,
            "sum_seconds": s.holds.sum_secs,
            "buckets": buckets,
            "timeouts": s.holds.timeouts,
            "waiting": s.holds.waiting,
        },
        "protocol_errors": s.protocol_errors,
        "fenced_sessions": s.fenced,
        "cancels_forwarded": s.cancels,
        "tls_handshakes": { "ok": s.tls_ok, "failed": s.tls_failed },
        "pools": p.pools.iter().map(pool).collect::<Vec<_>>(),
        "pool_stats": p.stats.iter().map(pool_stats).collect::<Vec<_>>(),
        "split": split(split_figures),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admin_view::overview;
    use crate::admin_view::tests::{pools, snapshot, POLICY};
    use std::time::Duration;

    #[test]
    fn members_routes_and_counters() {
        let (snap, routes) = snapshot(Duration::from_millis(250));
        let v = stats_json(&snap, &overview("pg", &snap, &routes, POLICY), &pools(), None);
        // Round trip through text: what a client really parses.
        let v: Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!((v["scope"].as_str(), v["leader"].as_str()), (Some("pg"), Some("a")));
        assert_eq!(v["view"]["age_seconds"], 0.25);
        assert_eq!((v["view"]["ttl_seconds"].as_u64(), v["view"]["freshness"].as_str()), (Some(30), Some("fresh")));
        assert_eq!(v["routes"]["primary"], "a");
        let names: Vec<&str> = v["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c<\"&'>\\\n"], "names are JSON-escaped and round-trip");
        let a = &v["members"][0];
        assert_eq!(
            (a["role"].as_str(), a["rw_route"].as_bool(), a["lag_bytes"].as_u64()),
            (Some("primary"), Some(true), Some(0))
        );
        assert_eq!((a["connections"]["rw"].as_u64(), a["address"].as_str()), (Some(1), Some("127.0.0.1:5001")));
        let b = &v["members"][1];
        assert_eq!(
            (b["ro_route"].as_bool(), b["lag_bytes"].as_u64(), b["timeline"].as_u64()),
            (Some(true), Some(500), Some(3))
        );
        assert_eq!(b["tags"]["noloadbalance"], false);
        assert_eq!(v["holds"]["buckets"][2], json!({"le": 0.5, "count": 1}));
        assert_eq!((v["fenced_sessions"].as_u64(), v["tls_handshakes"]["failed"].as_u64()), (Some(6), Some(9)));
    }

    /// Splitting counts as [`crate::split::state::Splitting::figures`] gives them.
    pub(crate) fn split_figures() -> SplitFigures {
        SplitFigures {
            to_replica: 70,
            to_primary: 30,
            reads_kept_on_primary: 4,
            per_backend: vec![("127.0.0.1:5001".into(), 30), ("127.0.0.1:5002<&>".into(), 70)],
            cache: crate::split::cache::CacheFigures { hits: 98, misses: 2, parse_ns: 250_000, entries: 2 },
        }
    }

    #[test]
    fn splitting_counts_per_backend() {
        let (snap, routes) = snapshot(Duration::ZERO);
        let o = overview("pg", &snap, &routes, POLICY);
        assert!(stats_json(&snap, &o, &pools(), None)["split"].is_null(), "no splitting, no counts");
        let v = stats_json(&snap, &o, &pools(), Some(&split_figures()));
        let v: Value = serde_json::from_str(&v.to_string()).unwrap();
        let split = &v["split"];
        assert_eq!((split["to_replicas"].as_u64(), split["to_primary"].as_u64()), (Some(70), Some(30)));
        assert_eq!(split["reads_kept_on_primary"], 4);
        assert_eq!(split["per_backend"][1], json!({"backend": "127.0.0.1:5002<&>", "statements": 70}));
        assert_eq!(split["cache"], json!({"hits": 98, "misses": 2, "entries": 2, "parse_seconds": 0.00025}));
    }

    #[test]
    fn unknowns_are_null() {
        let (mut snap, _) = snapshot(Duration::ZERO);
        snap.view = None;
        let v = stats_json(&snap, &overview("pg", &snap, &Default::default(), POLICY), &PoolsView::default(), None);
        assert!(v["leader"].is_null() && v["view"]["age_seconds"].is_null() && v["routes"]["primary"].is_null());
        assert_eq!(v["view"]["freshness"], "no_view");
        assert!(v["members"][0]["lag_bytes"].is_null() && v["members"][0]["timeline"].is_null());
        assert_eq!((v["pools"].as_array().map(Vec::len), v["pool_stats"].as_array().map(Vec::len)), (Some(0), Some(0)));
    }

    #[test]
    fn pools_and_their_counters_are_listed() {
        let (snap, routes) = snapshot(Duration::ZERO);
        let v = stats_json(&snap, &overview("pg", &snap, &routes, POLICY), &pools(), None);
        let v: Value = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(
            v["pools"][0],
            json!({
                "database": "app", "user": "app", "backend": "a", "retired": false,
                "clients": { "active": 5, "waiting": 2 },
                "servers": { "active": 4, "idle": 0, "login": 1 },
                "max_wait_seconds": 1.5,
            })
        );
        assert_eq!(
            (v["pools"][2]["user"].as_str(), v["pools"][2]["retired"].as_bool()),
            (Some("u<\"&'>\\\n"), Some(true))
        );
        assert_eq!(
            v["pool_stats"][0],
            json!({
                "database": "app", "transactions": 100, "queries": 250, "received_bytes": 4096,
                "sent_bytes": 8192, "in_transaction_seconds": 2.5, "client_wait_seconds": 0.5,
            })
        );
    }
}
