//! What the agent tells the world each cycle: its member key (read by the other members,
//! `patronictl` and `rampart list`) and the snapshot the REST API answers from.
//!
//! Both are pure functions of what the cycle observed, so the Patroni field wording is
//! unit-tested here. Invariant: the member key and the API never claim more than the probe saw;
//! a node is published as `primary` only while its PostgreSQL answered as a primary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_api::{NodeSnapshot, ReplicationConn};
use rampart_config::Config;
use rampart_core::observe::{JobKind, LocalPg};
use rampart_core::{Cluster, DataDir, DynamicConfig, MemberData, PgProcess};
use rampart_pg::Probe;

use super::settings::PATRONI_COMPAT_VERSION;

/// Patroni's wording of the PostgreSQL state. In maintenance mode a postmaster that went away
/// unasked is `stopped`, not `crashed`, as Patroni shows it: the operator stopped it (`pg_ctl stop
/// -m immediate` looks like a crash), and nothing will restart it.
pub fn state_text(local: &LocalPg, job: Option<JobKind>, paused: bool) -> &'static str {
    match job {
        Some(JobKind::Bootstrap) => return "initializing new cluster",
        Some(JobKind::Clone) => return "creating replica",
        Some(JobKind::Rewind) => return "rewinding",
        Some(JobKind::Restart) => return "restarting",
        Some(JobKind::Start) if !matches!(local.process, PgProcess::Running(_)) => return "starting",
        _ => {}
    }
    match local.process {
        PgProcess::Running(_) => "running",
        PgProcess::Starting => "starting",
        PgProcess::Crashed if !paused => "crashed",
        PgProcess::Crashed | PgProcess::Stopped => "stopped",
    }
}

/// Whether this replica's replay is paused for insufficient hot-standby settings (rule:
/// [`rampart_core::hot_standby::replay_blocked`]). Such a replica is published without a
/// replication state (as Patroni publishes a replica that does not stream), so neither the
/// proxy, `list` nor the health checks take it for a streaming one until it was restarted.
pub fn replay_blocked(local: &LocalPg) -> bool {
    match (&local.data, &local.process) {
        (DataDir::Initialized(c), PgProcess::Running(r)) if r.in_recovery => {
            rampart_core::hot_standby::replay_blocked(r.replay_pause, &r.hot_standby, &c.hot_standby).is_some()
        }
        _ => false,
    }
}

/// `primary`, `replica` or `uninitialized`.
pub fn role_text(local: &LocalPg) -> &'static str {
    match (&local.process, &local.data) {
        (PgProcess::Running(r), _) if !r.in_recovery => "primary",
        (_, DataDir::Empty) => "uninitialized",
        _ => "replica",
    }
}

/// A replica's replication state: `streaming`, `in archive recovery`, or none while its replay is
/// blocked.
fn replication_state(local: &LocalPg, p: &Probe) -> Option<String> {
    if replay_blocked(local) {
        return None;
    }
    Some(if p.streaming { "streaming" } else { "in archive recovery" }.to_string())
}

/// The member key value.
pub fn member_data(
    cfg: &Config,
    local: &LocalPg,
    probe: Option<&Probe>,
    job: Option<JobKind>,
    paused: bool,
) -> MemberData {
    let mut m = MemberData {
        conn_url: cfg.postgresql.conn_url(),
        api_url: cfg.restapi.api_url(),
        state: state_text(local, job, paused).into(),
        role: role_text(local).into(),
        version: PATRONI_COMPAT_VERSION.to_string(),
        tags: cfg.tags.clone(),
        rampart: Some(env!("CARGO_PKG_VERSION").to_string()),
        ..Default::default()
    };
    if paused {
        m.extra.insert("pause".into(), serde_json::Value::Bool(true));
    }
    if let (Some(p), PgProcess::Running(r)) = (probe, &local.process) {
        m.timeline = Some(r.timeline);
        if r.in_recovery {
            m.receive_lsn = p.received_lsn.map(|l| l.0);
            m.replay_lsn = p.replayed_lsn.map(|l| l.0);
            m.xlog_location = Some(r.wal.best().0);
            m.replication_state = replication_state(local, p);
        } else {
            m.xlog_location = p.flush_lsn.map(|l| l.0);
        }
    }
    m
}

/// Patroni's `pending_restart_reason`: `{name: {old_value, new_value}}`.
pub fn pending_reason_json(pending: &[rampart_pg::PendingRestart]) -> serde_json::Value {
    pending
        .iter()
        .map(|p| (p.name.clone(), serde_json::json!({"old_value": p.old_value, "new_value": p.new_value})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Inputs of the API snapshot that are not in the probe.
pub struct SnapshotInputs<'a> {
    /// Configuration.
    pub cfg: &'a Config,
    /// Dynamic configuration in force.
    pub dynamic: &'a DynamicConfig,
    /// Local PostgreSQL.
    pub local: &'a LocalPg,
    /// Full probe, when PostgreSQL answered.
    pub probe: Option<&'a Probe>,
    /// Running job.
    pub job: Option<JobKind>,
    /// Last DCS snapshot, if the DCS answered this cycle.
    pub cluster: Option<Arc<Cluster>>,
    /// Until when we hold the lock.
    pub leader_until: Option<Instant>,
    /// Unix seconds of the last DCS contact.
    pub dcs_last_seen: Option<u64>,
    /// End of this cycle.
    pub now: Instant,
}

/// The REST API's snapshot.
pub fn snapshot(i: SnapshotInputs<'_>) -> NodeSnapshot {
    let mut s = NodeSnapshot {
        scope: i.cfg.scope.clone(),
        name: i.cfg.name.clone(),
        api_version: PATRONI_COMPAT_VERSION.to_string(),
        state: state_text(i.local, i.job, i.dynamic.paused()).into(),
        role: role_text(i.local).into(),
        tags: i.cfg.tags.clone(),
        paused: i.dynamic.paused(),
        leader_until: i.leader_until,
        dcs_last_seen: i.dcs_last_seen,
        last_loop: Some(i.now),
        ttl: Duration::from_secs(i.dynamic.ttl),
        loop_wait: Duration::from_secs(i.dynamic.loop_wait),
        maximum_lag_on_failover: i.dynamic.maximum_lag_on_failover,
        cluster_optime: i.cluster.as_ref().map(|c| c.status.optime).unwrap_or(0),
        cluster_unlocked: i.cluster.as_ref().is_some_and(|c| c.leader.is_none()),
        cluster: i.cluster,
        ..Default::default()
    };
    if let DataDir::Initialized(ctl) = &i.local.data {
        s.database_system_identifier = ctl.sysid.clone();
    }
    if let (Some(p), PgProcess::Running(r)) = (i.probe, &i.local.process) {
        s.in_recovery = r.in_recovery;
        s.timeline = r.timeline;
        s.xlog_flush = p.flush_lsn.map(|l| l.0).unwrap_or(0);
        s.xlog_received = p.received_lsn.map(|l| l.0).unwrap_or(0);
        s.xlog_replayed = p.replayed_lsn.map(|l| l.0).unwrap_or(0);
        s.replayed_timestamp = p.replayed_at.clone();
        s.wal_replay_paused = p.replay_paused;
        if r.in_recovery {
            s.replication_state = replication_state(i.local, p);
            s.replay_blocked = replay_blocked(i.local);
        }
        s.postmaster_start_time = Some(p.postmaster_start_time.clone());
        s.server_version = u32::try_from(p.server_version_num).unwrap_or(0);
        s.replication = p
            .replication
            .iter()
            .map(|r| ReplicationConn {
                usename: r.usename.clone().unwrap_or_default(),
                application_name: r.application_name.clone().unwrap_or_default(),
                client_addr: r.client_addr.clone(),
                state: r.state.as_deref().unwrap_or_default().into(),
                sync_state: r.sync_state.as_deref().unwrap_or_default().into(),
                sync_priority: r.sync_priority.unwrap_or(0),
            })
            .collect();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::observe::{ClusterState, ControlData, RunningPg, WalPositions};
    use rampart_core::Lsn;

    fn cfg() -> Config {
        let y = "scope: pg\nname: n1\nrestapi: {listen: '127.0.0.1:8008'}\netcd3: {host: '127.0.0.1:2379'}\n\
                 postgresql:\n  listen: '127.0.0.1:5433'\n  data_dir: /tmp/d\n  authentication:\n    replication: {username: r, password: p}\n    superuser: {username: postgres, password: s}\n";
        rampart_config::parse(y, "t.yml", std::iter::empty()).unwrap().config
    }

    fn replica_probe() -> (LocalPg, Probe) {
        let local = LocalPg {
            data: DataDir::Initialized(ControlData {
                sysid: "7".into(),
                state: ClusterState::InArchiveRecovery,
                timeline: 2,
                checkpoint_lsn: Lsn(1),
                min_recovery_timeline: 0,
                min_recovery_lsn: Lsn(0),
                hot_standby: Default::default(),
            }),
            process: PgProcess::Running(RunningPg {
                in_recovery: true,
                timeline: 2,
                wal: WalPositions { flush: None, received: Some(Lsn(200)), replayed: Some(Lsn(150)) },
                streaming: true,
                upstream: Some(("127.0.0.1".into(), 5432)),
                ..Default::default()
            }),
        };
        let probe = Probe {
            in_recovery: true,
            timeline: 2,
            flush_lsn: None,
            received_lsn: Some(Lsn(200)),
            replayed_lsn: Some(Lsn(150)),
            received_tli: Some(2),
            wal_receiver_status: Some("streaming".into()),
            upstream_silent_ms: Some(10),
            streaming: true,
            upstream: Some(("127.0.0.1".into(), 5432)),
            postmaster_start_time: "2026-01-01 00:00:00+00".into(),
            server_version_num: 150008,
            replayed_at: None,
            replay_paused: false,
            replay_pause: Default::default(),
            synchronous_commit: "on".into(),
            hot_standby: Default::default(),
            replication: vec![],
            system_identifier: "7".into(),
            synchronous_standby_names: String::new(),
            slots: None,
        };
        (local, probe)
    }

    #[test]
    fn replica_member_key_uses_patroni_fields() {
        let (local, probe) = replica_probe();
        let m = member_data(&cfg(), &local, Some(&probe), None, false);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["conn_url"], "postgres://127.0.0.1:5433/postgres");
        assert_eq!(v["api_url"], "http://127.0.0.1:8008/patroni");
        assert_eq!(v["state"], "running");
        assert_eq!(v["role"], "replica");
        assert_eq!(v["replication_state"], "streaming");
        assert_eq!(v["xlog_location"], 200);
        assert_eq!(v["receive_lsn"], 200);
        assert_eq!(v["replay_lsn"], 150);
        assert_eq!(v["timeline"], 2);
    }

    #[test]
    fn pending_restart_reason_as_patroni_publishes_it() {
        let p = |n: &str, o: &str, v: &str| rampart_pg::PendingRestart {
            name: n.into(),
            old_value: o.into(),
            new_value: v.into(),
        };
        let v = pending_reason_json(&[p("max_connections", "100", "150"), p("shared_buffers", "128MB", "256MB")]);
        assert_eq!(
            v,
            serde_json::json!({"max_connections": {"old_value": "100", "new_value": "150"},
                               "shared_buffers": {"old_value": "128MB", "new_value": "256MB"}})
        );
    }

    #[test]
    fn a_replica_paused_for_insufficient_settings_is_not_published_as_streaming() {
        use rampart_core::hot_standby::{ReplayPause, Setting, Values};
        let (mut local, probe) = replica_probe();
        if let DataDir::Initialized(c) = &mut local.data {
            c.hot_standby = Values::from_pairs([(Setting::MaxConnections, 150)]);
        }
        if let PgProcess::Running(r) = &mut local.process {
            r.hot_standby = Values::from_pairs([(Setting::MaxConnections, 100)]);
            r.replay_pause = ReplayPause::Paused;
        }
        assert!(replay_blocked(&local));
        let m = member_data(&cfg(), &local, Some(&probe), None, false);
        assert_eq!((m.state.as_str(), m.replication_state.as_deref()), ("running", None));
        let m = member_data(&cfg(), &local, Some(&probe), Some(JobKind::Restart), false);
        assert_eq!(m.state, rampart_core::PgState::Restarting, "while it is restarted with enough");
        let d = rampart_core::DynamicConfig::default();
        let s = snapshot(SnapshotInputs {
            cfg: &cfg(),
            dynamic: &d,
            local: &local,
            probe: Some(&probe),
            job: None,
            cluster: None,
            leader_until: None,
            dcs_last_seen: None,
            now: Instant::now(),
        });
        assert!(s.replay_blocked && s.replication_state.is_none());
    }

    #[test]
    fn states_follow_jobs_and_process() {
        let empty = LocalPg { data: DataDir::Empty, process: PgProcess::Stopped };
        assert_eq!(state_text(&empty, Some(JobKind::Clone), false), "creating replica");
        assert_eq!(state_text(&empty, Some(JobKind::Bootstrap), false), "initializing new cluster");
        assert_eq!(role_text(&empty), "uninitialized");
        let crashed = LocalPg { data: DataDir::Empty, process: PgProcess::Crashed };
        assert_eq!(state_text(&crashed, None, false), "crashed");
        assert_eq!(state_text(&crashed, None, true), "stopped", "in maintenance mode, as Patroni shows it");
        let m = member_data(&cfg(), &crashed, None, None, false);
        assert_eq!(m.xlog_location, None, "nothing claimed without a probe");
    }
}
