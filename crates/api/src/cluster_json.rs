//! Bodies of the DCS-backed monitoring endpoints: `GET /cluster` (Patroni's `cluster_as_json`),
//! `GET /history` and `GET /config`.
//!
//! Invariant kept here: these are rendered from one DCS snapshot ([`Cluster`]) only, never mixed
//! with local PostgreSQL state, so every member is described as the DCS saw it at one revision;
//! a member with no reported WAL position gets `"lag": "unknown"` rather than a made-up number.
//! Positions and lags have the shapes of Patroni's `cluster_as_json`.

use rampart_core::{Cluster, Member, Tags};
use serde_json::{json, Map, Value};

use crate::snapshot::{sync_mode, SyncMode};

/// The leader's WAL position as the cluster knows it: the `status` key's optime, which is what
/// Patroni measures lag against (so `/cluster`, `patronictl list` and `rampart list` agree).
fn cluster_lsn(c: &Cluster) -> u64 {
    c.status.optime
}

fn member_json(c: &Cluster, m: &Member, mode: SyncMode, leader_lsn: u64) -> Value {
    let is_leader = c.is_leader(&m.name);
    let role = if is_leader && m.data.role == rampart_core::Role::StandbyLeader {
        "standby_leader"
    } else if is_leader {
        "leader"
    } else if mode != SyncMode::Off && c.listed_in_sync_key(&m.name) {
        if mode == SyncMode::Quorum {
            "quorum_standby"
        } else {
            "sync_standby"
        }
    } else {
        "replica"
    };
    // Like Patroni, a replica's state shows how it replicates (`streaming`) when it says so.
    let state = match m.data.replication_state.as_deref() {
        Some(rs) if !is_leader && !rs.is_empty() => rs,
        _ => m.data.state.as_str(),
    };
    let mut o = Map::new();
    o.insert("name".into(), json!(m.name));
    o.insert("role".into(), json!(role));
    o.insert("state".into(), json!(state));
    o.insert("api_url".into(), json!(m.data.api_url));
    if let Some((host, port)) = m.data.conn_host_port().filter(|(h, _)| !h.is_empty()) {
        o.insert("host".into(), json!(host));
        o.insert("port".into(), json!(port));
    }
    if let Some(tl) = m.data.timeline {
        o.insert("timeline".into(), json!(tl));
    }
    if let Some(pr) = m.data.pending_restart {
        o.insert("pending_restart".into(), json!(pr));
    }
    for key in ["pending_restart_reason", "scheduled_restart"] {
        if let Some(v) = m.data.extra.get(key) {
            o.insert(key.into(), v.clone());
        }
    }
    if m.data.tags != Tags::default() {
        o.insert("tags".into(), json!(m.data.tags));
    }
    if !is_leader {
        // Patroni's shapes: the position as `X/Y` text, the lag in bytes (0 when ahead of the
        // status key), both `unknown` when the member published no (or a zero) position.
        for (kind, lsn) in
            [("receive_", m.data.receive_lsn), ("replay_", m.data.replay_lsn), ("", m.data.xlog_location)]
        {
            let (lsn, lag) = match lsn.filter(|&l| l > 0) {
                Some(l) => (json!(rampart_core::Lsn(l).to_string()), json!(leader_lsn.saturating_sub(l))),
                None => (json!("unknown"), json!("unknown")),
            };
            o.insert(format!("{kind}lsn"), lsn);
            o.insert(format!("{kind}lag"), lag);
        }
    }
    Value::Object(o)
}

/// `GET /cluster`: `{members: [...], scope, pause?, scheduled_switchover?}`.
pub fn cluster_json(c: &Cluster, scope: &str) -> Value {
    let mode = sync_mode(c);
    let leader_lsn = cluster_lsn(c);
    let mut members: Vec<&Member> = c.members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut o = Map::new();
    o.insert(
        "members".into(),
        Value::Array(members.into_iter().map(|m| member_json(c, m, mode, leader_lsn)).collect()),
    );
    o.insert("scope".into(), json!(scope));
    if c.config.as_ref().is_some_and(|cfg| cfg.paused()) {
        o.insert("pause".into(), json!(true));
    }
    if let Some(f) = c.failover.as_ref().filter(|f| f.scheduled_at.is_some()) {
        let mut s = Map::new();
        s.insert("at".into(), json!(f.scheduled_at));
        if let Some(from) = &f.leader {
            s.insert("from".into(), json!(from));
        }
        if let Some(to) = &f.member {
            s.insert("to".into(), json!(to));
        }
        o.insert("scheduled_switchover".into(), Value::Object(s));
    }
    Value::Object(o)
}

/// `GET /history`: the `history` key as a list of `[timeline, lsn, reason, timestamp, leader]`.
pub fn history_json(c: &Cluster) -> Value {
    Value::Array(c.history.iter().map(|h| h.to_json()).collect())
}

/// `GET /config`: the dynamic configuration, or `None` when the DCS has none.
pub fn config_json(c: &Cluster) -> Option<Value> {
    c.config.as_ref().and_then(|cfg| serde_json::to_value(cfg).ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rampart_core::keys::ClusterPrefix;
    use rampart_core::model::RawKv;

    /// Three members as Patroni would publish them: leader n2, sync standby n1, n3 with no position.
    pub(crate) fn three_members() -> Cluster {
        let kv =
            |k: &str, v: &str| RawKv { key: format!("/service/demo/{k}"), value: v.into(), lease: 1, mod_revision: 1 };
        let kvs = vec![
            kv("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":true,"pause":true}"#),
            kv("leader", "n2"),
            kv("status", r#"{"optime":1000}"#),
            kv("sync", r#"{"leader":"n2","sync_standby":"n1"}"#),
            kv("failover", r#"{"leader":"n2","member":"n1","scheduled_at":"2030-01-01T00:00:00+00:00"}"#),
            kv(
                "members/n2",
                r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"primary","xlog_location":1200,"timeline":3}"#,
            ),
            kv(
                "members/n1",
                r#"{"conn_url":"postgres://10.0.0.1:5433/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"replica","xlog_location":900,"receive_lsn":900,"replay_lsn":800,"timeline":3,"replication_state":"streaming","tags":{"zone":"a"}}"#,
            ),
            kv(
                "members/n3",
                r#"{"conn_url":"postgres://10.0.0.3/postgres","api_url":"http://10.0.0.3:8008/patroni","state":"starting","role":"replica"}"#,
            ),
            kv(
                "history",
                r#"[[1,500,"no recovery target specified","2026-01-01T00:00:00+00:00","n1"],[2,700,"no recovery target specified"]]"#,
            ),
            // A proxy's report (Rampart's own key): no member, shown nowhere.
            kv("proxies/app-1", r#"{"drain_timeout":5,"drained":"n2"}"#),
        ];
        let c = Cluster::from_kvs(&ClusterPrefix::new("/service", "demo"), &kvs, 9);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        c
    }

    #[test]
    fn cluster_as_patroni_shows_it() {
        let v = cluster_json(&three_members(), "demo");
        assert_eq!(v["scope"], "demo");
        assert_eq!(v["pause"], true);
        assert_eq!(v["scheduled_switchover"], json!({"at": "2030-01-01T00:00:00+00:00", "from": "n2", "to": "n1"}));
        let m = v["members"].as_array().unwrap();
        assert_eq!(m.iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(), ["n1", "n2", "n3"]);
        assert_eq!(
            m[0],
            json!({"name": "n1", "role": "sync_standby", "state": "streaming", "api_url": "http://10.0.0.1:8008/patroni",
                   "host": "10.0.0.1", "port": 5433, "timeline": 3, "tags": {"zone": "a"},
                   "lsn": "0/384", "lag": 100, "receive_lsn": "0/384", "receive_lag": 100,
                   "replay_lsn": "0/320", "replay_lag": 200})
        );
        assert_eq!(
            m[1],
            json!({"name": "n2", "role": "leader", "state": "running", "api_url": "http://10.0.0.2:8008/patroni",
                   "host": "10.0.0.2", "port": 5432, "timeline": 3})
        );
        assert_eq!(m[2]["role"], "replica");
        assert_eq!(m[2]["state"], "starting");
        assert_eq!(m[2]["lag"], "unknown");
        assert_eq!((&m[2]["receive_lsn"], &m[2]["replay_lag"]), (&json!("unknown"), &json!("unknown")));
        assert_eq!(m[2]["port"], 5432);
    }

    #[test]
    fn plain_cluster_has_no_optional_keys() {
        let v = cluster_json(&Cluster::default(), "x");
        assert_eq!(v, json!({"members": [], "scope": "x"}));
    }

    #[test]
    fn history_and_config() {
        let c = three_members();
        assert_eq!(
            history_json(&c),
            json!([
                [1, 500, "no recovery target specified", "2026-01-01T00:00:00+00:00", "n1"],
                [2, 700, "no recovery target specified"]
            ])
        );
        let cfg = config_json(&c).unwrap();
        assert_eq!(cfg["ttl"], 30);
        assert_eq!(cfg["synchronous_mode"], true);
        assert_eq!(config_json(&Cluster::default()), None);
    }
}
