//! Whether a member may take over as leader: Patroni's `failover_limitation`, one rule for every
//! caller. The agent's leader race and the leader's switchover check read it through
//! [`PeerStatus::can_fail_over`]; the REST API asks it of each candidate before it writes a
//! `failover` key.
//!
//! The facts come from the member's own `GET /patroni` answer, read here by [`Report::read`]
//! (Patroni's field names, `master` accepted for `primary`). Invariant: a member is a candidate
//! only if it runs, its tags allow promotion, it is not backing off after a refused promotion,
//! its required watchdog works, and its replay is not paused for insufficient settings (its
//! promotion would never end); with a leader in place it must also be a replica.

use serde_json::Value;

use crate::lsn::{Lsn, Timeline};
use crate::model::Tags;
use crate::observe::PeerStatus;
use crate::roles::Role;

/// Why a member cannot take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Limitation {
    /// PostgreSQL is not running there.
    #[error("not running")]
    NotRunning,
    /// There is a leader to take over from, and this member is not its replica.
    #[error("not a replica")]
    NotAReplica,
    /// Its tags forbid it (`nofailover`, `failover_priority: 0`).
    #[error("not allowed to promote")]
    NotAllowed,
    /// It refused a promotion a moment ago (`pre_promote` failed) and stays out for a ttl.
    #[error("backing off after a refused promotion")]
    BackingOff,
    /// Its watchdog is required but cannot be used.
    #[error("not watchdog capable")]
    NoWatchdog,
    /// Its WAL replay is paused because it runs with settings below the primary's.
    #[error("WAL replay is paused for insufficient parameter settings")]
    ReplayBlocked,
}

/// What a member's `/patroni` answer says about it, as far as taking over goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `state` is `running`.
    pub running: bool,
    /// `role` is `primary` (or Patroni 2's `master`).
    pub primary: bool,
    /// `role` is `replica` (a standby leader is neither).
    pub replica: bool,
    /// Its furthest WAL position (written, received or replayed), if it reported one.
    pub wal: Option<Lsn>,
    /// Its timeline (0 if not reported).
    pub timeline: Timeline,
    /// Its tags.
    pub tags: Tags,
    /// `failover_backoff`: it refused a promotion and stays out of races for now.
    pub backing_off: bool,
    /// `watchdog_failed`.
    pub watchdog_failed: bool,
    /// `replay_blocked`.
    pub replay_blocked: bool,
}

impl Report {
    /// Reads a `/patroni` answer; `None` if it is not one (no `role`).
    pub fn read(v: &Value) -> Option<Report> {
        let role = Role::parse(v.get("role")?.as_str()?);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        let x = v.get("xlog");
        let field = |k: &str| x.and_then(|x| x.get(k)).and_then(Value::as_u64);
        Some(Report {
            running: v.get("state").and_then(Value::as_str) == Some("running"),
            primary: role.is_primary(),
            replica: role == Role::Replica,
            wal: [field("location"), field("received_location"), field("replayed_location")]
                .into_iter()
                .flatten()
                .max()
                .map(Lsn),
            timeline: v.get("timeline").and_then(Value::as_u64).unwrap_or(0) as Timeline,
            tags: v.get("tags").cloned().and_then(|t| serde_json::from_value(t).ok()).unwrap_or_default(),
            backing_off: flag("failover_backoff"),
            watchdog_failed: flag("watchdog_failed"),
            replay_blocked: flag("replay_blocked"),
        })
    }

    /// Patroni's `failover_limitation`: the first reason this member cannot take over, or
    /// `None`. `need_replica`: a leader exists, so the member must be one of its replicas.
    pub fn failover_limitation(&self, need_replica: bool) -> Option<Limitation> {
        if !self.running {
            Some(Limitation::NotRunning)
        } else if need_replica && !self.replica {
            Some(Limitation::NotAReplica)
        } else if !self.tags.can_fail_over() {
            Some(Limitation::NotAllowed)
        } else if self.backing_off {
            Some(Limitation::BackingOff)
        } else if self.watchdog_failed {
            Some(Limitation::NoWatchdog)
        } else if self.replay_blocked {
            Some(Limitation::ReplayBlocked)
        } else {
            None
        }
    }

    /// The fields of the leader race; `None` without a WAL position.
    pub fn peer_status(&self) -> Option<PeerStatus> {
        Some(PeerStatus {
            is_primary: self.running && self.primary,
            wal: self.wal?,
            timeline: self.timeline,
            // Whether a replica is needed is the caller's question (the race has no leader;
            // the switchover check asks `!is_primary` itself).
            can_fail_over: self.failover_limitation(false).is_none(),
            priority: self.tags.priority(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limitation(v: Value, need_replica: bool) -> Option<Limitation> {
        Report::read(&v).expect("a /patroni answer").failover_limitation(need_replica)
    }

    #[test]
    fn a_running_replica_with_default_tags_may_take_over() {
        let v = json!({"state":"running","role":"replica","xlog":{"received_location":9}});
        assert_eq!(limitation(v, true), None);
    }

    #[test]
    fn each_limitation_is_named_in_patronis_order() {
        let base = |extra: Value| {
            let mut v = json!({"state":"running","role":"replica","xlog":{"received_location":9}});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        assert_eq!(limitation(base(json!({"state":"stopped"})), false), Some(Limitation::NotRunning));
        assert_eq!(limitation(base(json!({"role":"primary"})), true), Some(Limitation::NotAReplica));
        assert_eq!(limitation(base(json!({"role":"primary"})), false), None, "no leader: any running member");
        assert_eq!(limitation(base(json!({"tags":{"nofailover":true}})), true), Some(Limitation::NotAllowed));
        assert_eq!(limitation(base(json!({"tags":{"failover_priority":0}})), true), Some(Limitation::NotAllowed));
        assert_eq!(limitation(base(json!({"failover_backoff":true})), true), Some(Limitation::BackingOff));
        assert_eq!(limitation(base(json!({"watchdog_failed":true})), true), Some(Limitation::NoWatchdog));
        assert_eq!(limitation(base(json!({"replay_blocked":true})), true), Some(Limitation::ReplayBlocked));
        let both = base(json!({"state":"stopped","tags":{"nofailover":true}}));
        assert_eq!(limitation(both, true), Some(Limitation::NotRunning), "the first reason");
    }

    #[test]
    fn race_fields_come_from_the_same_reading() {
        let replica = json!({"state":"running","role":"replica","timeline":2,
            "xlog":{"received_location":100,"replayed_location":90},"tags":{"nofailover":true}});
        let p = Report::read(&replica).unwrap().peer_status().unwrap();
        assert!(!p.is_primary);
        assert_eq!((p.wal, p.timeline), (Lsn(100), 2));
        assert!(!p.can_fail_over);
        let primary = json!({"state":"running","role":"master","timeline":1,"xlog":{"location":500}});
        assert!(Report::read(&primary).unwrap().peer_status().unwrap().is_primary, "Patroni 2's spelling");
        let stopped = json!({"state":"stopped","role":"primary","xlog":{"location":1}});
        assert!(!Report::read(&stopped).unwrap().peer_status().unwrap().is_primary, "does not block the race");
        assert_eq!(Report::read(&json!({"state":"running"})), None);
        let no_wal = json!({"state":"running","role":"replica"});
        assert_eq!(Report::read(&no_wal).unwrap().peer_status(), None);
        let backing_off =
            json!({"state":"running","role":"replica","xlog":{"received_location":9},"failover_backoff":true});
        assert!(!Report::read(&backing_off).unwrap().peer_status().unwrap().can_fail_over);
    }
}
