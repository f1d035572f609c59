//! Manual switchover and failover: what each member does about the DCS `failover` key.
//!
//! The key is written by `POST /switchover`, `POST /failover`, `rampart switchover` or
//! `patronictl`; every member's HA loop acts on it:
//! * the **leader** checks the request (addressed to it, a healthy candidate exists, its time has
//!   come), lets the proxies finish their transactions on it (for a bounded time, see
//!   [`crate::drain`]; a forced failover does not wait), then stops PostgreSQL cleanly. It
//!   releases the lock only once a candidate has *received the shutdown checkpoint*, so the
//!   candidate holds every acknowledged commit; if none does in time, it gives up and starts
//!   again as primary (nothing was lost, the switchover is refused);
//! * the **named candidate** takes the lock as soon as it is free, without the lag race (the
//!   operator chose it; for a switchover the leader has just checked it is caught up);
//! * **other replicas** hold back while the named candidate is alive, and otherwise race as
//!   usual without the former leader.
//!
//! Everything here is a pure function of the key, the peers' reports and the time.

use crate::lsn::Lsn;
use crate::model::{Cluster, Failover};
use crate::observe::PeerReport;
use crate::roles::PgState;

/// How long a leader that stopped for a switchover waits for a candidate to receive its
/// shutdown checkpoint before giving up and starting again as primary.
pub const CATCH_UP_TIMEOUT_MS: u64 = 30_000;

/// Whether a request's time has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// Now (it was not scheduled, or its time has passed).
    Now,
    /// At this unix time (ms).
    At(i64),
    /// Its `scheduled_at` cannot be read: the leader clears it without acting.
    Unreadable(String),
}

/// When `f` is due, at wall-clock time `wall_ms` (unix ms). One rule for the leader that acts on
/// the key, every member's cycle pace and the proxy that withholds the primary's route.
pub fn due(f: &Failover, wall_ms: i64) -> Due {
    let Some(at) = &f.scheduled_at else { return Due::Now };
    match crate::clock::parse_rfc3339_ms(at) {
        None => Due::Unreadable(at.clone()),
        Some(t) if t > wall_ms => Due::At(t),
        Some(_) => Due::Now,
    }
}

/// Whether `f` is due now.
pub fn is_due(f: &Failover, wall_ms: i64) -> bool {
    due(f, wall_ms) == Due::Now
}

/// Whether the leader `leader` is about to hand over: a request in `cluster` that names it (or
/// no leader), for another candidate, is due. The leader acts on such a request or clears it
/// within a cycle.
pub fn handover_due(cluster: &Cluster, leader: &str, wall_ms: i64) -> bool {
    let Some(f) = &cluster.failover else { return false };
    if f.leader.as_deref().is_some_and(|l| l != leader) || f.member.as_deref() == Some(leader) {
        return false;
    }
    is_due(f, wall_ms)
}

/// What the running leader does about the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderStep {
    /// Clear the key and go on leading, for this reason.
    Clear(String),
    /// Not yet: the switchover is scheduled at this unix time (ms).
    WaitUntil(i64),
    /// Hand over: stop cleanly; `to` names the candidate, if one was named.
    Demote {
        /// The named candidate.
        to: Option<String>,
    },
}

/// A peer that could take over: answers, runs as a replica, may fail over, and is within
/// `max_lag` of `leader_wal`.
fn healthy(p: &PeerReport, leader_wal: Lsn, max_lag: u64) -> bool {
    p.status.as_ref().is_some_and(|s| !s.is_primary && s.can_fail_over && s.wal.lag_behind(leader_wal) <= max_lag)
}

/// The running leader's decision about `f`, once the request was admitted
/// ([`crate::admission`]): whether its time has come and a healthy candidate is there.
pub fn as_running_leader(
    me: &str,
    f: &Failover,
    peers: &[PeerReport],
    wall_ms: i64,
    my_wal: Lsn,
    max_lag: u64,
) -> LeaderStep {
    if f.member.as_deref() == Some(me) {
        return LeaderStep::Clear("the requested candidate is already the leader".into());
    }
    match due(f, wall_ms) {
        Due::Unreadable(at) => return LeaderStep::Clear(format!("cannot read scheduled_at {at:?}")),
        Due::At(t) => return LeaderStep::WaitUntil(t),
        Due::Now => {}
    }
    let ok = match &f.member {
        Some(m) => peers.iter().any(|p| &p.name == m && healthy(p, my_wal, max_lag)),
        None => peers.iter().any(|p| healthy(p, my_wal, max_lag)),
    };
    if !ok {
        return LeaderStep::Clear(match &f.member {
            Some(m) => {
                format!("switchover to {m} cancelled: it is not a healthy replica within maximum_lag_on_failover")
            }
            None => "switchover cancelled: no healthy replica to hand over to".into(),
        });
    }
    LeaderStep::Demote { to: f.member.clone() }
}

/// What the leader that stopped for a switchover does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseStep {
    /// This candidate has the shutdown checkpoint: release the lock.
    Release(String),
    /// Keep the lock a little longer.
    Wait,
    /// Nobody caught up in time: clear the request and start again as primary.
    Abort,
}

/// Whether a candidate has received everything up to and including the shutdown checkpoint
/// (its position is past the checkpoint record's start).
pub fn as_stopped_leader(f: &Failover, peers: &[PeerReport], checkpoint: Lsn, waited_ms: u64) -> ReleaseStep {
    let caught_up = peers.iter().find(|p| {
        f.member.as_ref().is_none_or(|m| &p.name == m)
            && p.status.as_ref().is_some_and(|s| !s.is_primary && s.can_fail_over && s.wal > checkpoint)
    });
    match caught_up {
        Some(p) => ReleaseStep::Release(p.name.clone()),
        None if waited_ms < CATCH_UP_TIMEOUT_MS => ReleaseStep::Wait,
        None => ReleaseStep::Abort,
    }
}

/// What a replica does about the key while there is no leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaStep {
    /// We are the named candidate: take the lock.
    Take,
    /// The named candidate is alive: let it.
    Wait(String),
    /// Race as usual, but the former leader is no candidate.
    Race,
}

/// A replica's decision about `f` when there is no leader.
pub fn as_replica(me: &str, f: &Failover, peers: &[PeerReport]) -> ReplicaStep {
    match &f.member {
        Some(m) if m == me => ReplicaStep::Take,
        Some(m) => {
            let alive = peers.iter().any(|p| &p.name == m && p.status.as_ref().is_some_and(|s| !s.is_primary));
            if alive {
                ReplicaStep::Wait(format!("waiting for {m}, the requested candidate, to take over"))
            } else {
                ReplicaStep::Race
            }
        }
        None => ReplicaStep::Race,
    }
}

/// Where a switchover or failover stands, as whoever asked for it sees it in the DCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not settled yet: the request waits, a candidate is promoting, or a race is under way.
    Pending,
    /// This member leads now: it holds the lock and its member key shows a running primary.
    Led(String),
    /// The request is gone and the former leader still (or again) holds the lock: refused.
    Refused,
}

/// Rule: **a handover is reported by who really leads afterwards.** Holding the leader key is
/// not enough: a candidate that took the lock may still fail to promote and release it to
/// another member. Only a holder whose own member key says it runs as primary (in a standby
/// cluster: as the standby leader) leads; until one does, the outcome is pending (also while the
/// request is gone but a race goes on).
pub fn outcome(cluster: &Cluster, old_leader: Option<&str>) -> Outcome {
    let holder = cluster.leader.as_ref().map(|l| l.name.as_str());
    if let Some(h) = holder.filter(|h| Some(*h) != old_leader) {
        let standby = cluster.config.as_ref().is_some_and(|c| c.standby_cluster().is_some());
        let leads = |r: &crate::roles::Role| match standby {
            true => *r == crate::roles::Role::StandbyLeader,
            false => r.is_primary(),
        };
        let primary = cluster.member(h).is_some_and(|m| leads(&m.data.role) && m.data.state == PgState::Running);
        return if primary { Outcome::Led(h.to_string()) } else { Outcome::Pending };
    }
    if cluster.failover.is_none() && old_leader.is_some() && holder == old_leader {
        return Outcome::Refused;
    }
    Outcome::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::PeerStatus;

    #[test]
    fn a_handover_is_reported_by_who_really_leads_afterwards() {
        let member = |name: &str, role: &str| crate::model::Member {
            name: name.into(),
            data: crate::model::MemberData { state: "running".into(), role: role.into(), ..Default::default() },
            lease: 1,
        };
        let at = |leader: Option<&str>, pending: bool, roles: &[(&str, &str)]| Cluster {
            leader: leader.map(|l| crate::model::Leader { name: l.into(), lease: 1, mod_revision: 1 }),
            failover: pending.then(|| req(Some("a"), Some("b"), None)),
            members: roles.iter().map(|(n, r)| member(n, r)).collect(),
            ..Default::default()
        };
        let old = Some("a");
        assert_eq!(outcome(&at(Some("a"), true, &[("a", "primary")]), old), Outcome::Pending, "not acted on yet");
        // b took the lock and cleared the request, but is still promoting: not settled.
        assert_eq!(outcome(&at(Some("b"), false, &[("b", "replica")]), old), Outcome::Pending);
        assert_eq!(outcome(&at(Some("b"), false, &[("b", "primary")]), old), Outcome::Led("b".into()));
        // b's promotion failed and it let go; the race goes on until c leads.
        assert_eq!(outcome(&at(None, false, &[("b", "replica")]), old), Outcome::Pending);
        assert_eq!(outcome(&at(Some("c"), false, &[("c", "primary")]), old), Outcome::Led("c".into()));
        assert_eq!(outcome(&at(Some("a"), false, &[("a", "primary")]), old), Outcome::Refused, "dropped");
        assert_eq!(outcome(&at(Some("b"), false, &[("b", "master")]), None), Outcome::Led("b".into()));
        // In a standby cluster the new holder leads once it runs as the standby leader.
        let standby = |c: Cluster| Cluster {
            config: Some(crate::DynamicConfig {
                extra: [("standby_cluster".to_string(), serde_json::json!({"host": "h"}))].into(),
                ..Default::default()
            }),
            ..c
        };
        assert_eq!(outcome(&standby(at(Some("b"), false, &[("b", "replica")])), old), Outcome::Pending);
        let led = outcome(&standby(at(Some("b"), false, &[("b", "standby_leader")])), old);
        assert_eq!(led, Outcome::Led("b".into()));
    }

    fn peer(name: &str, wal: u64, eligible: bool) -> PeerReport {
        PeerReport {
            name: name.into(),
            status: Some(PeerStatus {
                is_primary: false,
                wal: Lsn(wal),
                timeline: 1,
                can_fail_over: eligible,
                priority: 1,
            }),
        }
    }

    fn req(leader: Option<&str>, member: Option<&str>, at: Option<&str>) -> Failover {
        Failover {
            leader: leader.map(Into::into),
            member: member.map(Into::into),
            scheduled_at: at.map(Into::into),
            force: false,
        }
    }

    #[test]
    fn leader_decisions() {
        let peers = [peer("b", 1000, true), peer("c", 10, true), peer("d", 1000, false)];
        let step = |f: &Failover, _: bool| as_running_leader("a", f, &peers, 1_000_000, Lsn(1000), 100);
        assert_eq!(step(&req(Some("a"), Some("b"), None), false), LeaderStep::Demote { to: Some("b".into()) });
        assert_eq!(step(&req(Some("a"), None, None), false), LeaderStep::Demote { to: None });
        assert!(matches!(step(&req(None, Some("a"), None), false), LeaderStep::Clear(_)), "already leader");
        assert!(
            matches!(step(&req(Some("a"), Some("c"), None), false), LeaderStep::Clear(m) if m.contains("c")),
            "lagging"
        );
        assert!(matches!(step(&req(Some("a"), Some("d"), None), false), LeaderStep::Clear(_)), "nofailover");
        assert!(matches!(step(&req(Some("a"), Some("zz"), None), false), LeaderStep::Clear(_)), "not a member");
        let future = "2100-01-01T00:00:00Z";
        assert!(matches!(step(&req(Some("a"), Some("b"), Some(future)), false), LeaderStep::WaitUntil(_)));
        assert_eq!(
            step(&req(Some("a"), Some("b"), Some("1970-01-01T00:00:00Z")), false),
            LeaderStep::Demote { to: Some("b".into()) }
        );
        assert!(matches!(step(&req(Some("a"), Some("b"), Some("soon")), false), LeaderStep::Clear(_)));
    }

    #[test]
    fn a_request_is_due_when_its_time_has_come_and_a_handover_only_from_the_named_leader() {
        let at = |t: &str| req(Some("a"), Some("b"), Some(t));
        assert_eq!(due(&req(Some("a"), None, None), 0), Due::Now);
        assert_eq!(due(&at("1970-01-01T00:00:01Z"), 999), Due::At(1000));
        assert_eq!(due(&at("1970-01-01T00:00:01Z"), 1000), Due::Now);
        assert!(matches!(due(&at("soon"), 0), Due::Unreadable(_)));
        assert!(!is_due(&at("soon"), i64::MAX), "an unreadable time is cleared, never carried out");
        let mut c = Cluster { failover: Some(req(Some("a"), Some("b"), None)), ..Default::default() };
        assert!(handover_due(&c, "a", 0));
        assert!(!handover_due(&c, "x", 0), "a request naming another leader");
        c.failover = Some(req(None, Some("a"), None));
        assert!(!handover_due(&c, "a", 0), "the candidate already leads");
        c.failover = Some(at("2100-01-01T00:00:00Z"));
        assert!(!handover_due(&c, "a", 0), "not yet");
        c.failover = None;
        assert!(!handover_due(&c, "a", 0));
    }

    #[test]
    fn release_only_once_a_candidate_has_the_shutdown_checkpoint() {
        let f = req(Some("a"), Some("b"), None);
        assert_eq!(as_stopped_leader(&f, &[peer("b", 1000, true)], Lsn(1000), 0), ReleaseStep::Wait);
        assert_eq!(as_stopped_leader(&f, &[peer("b", 1040, true)], Lsn(1000), 0), ReleaseStep::Release("b".into()));
        assert_eq!(
            as_stopped_leader(&f, &[peer("c", 1040, true)], Lsn(1000), 0),
            ReleaseStep::Wait,
            "not the named one"
        );
        assert_eq!(as_stopped_leader(&f, &[], Lsn(1000), CATCH_UP_TIMEOUT_MS), ReleaseStep::Abort);
        let any = req(Some("a"), None, None);
        assert_eq!(as_stopped_leader(&any, &[peer("c", 1040, true)], Lsn(1000), 0), ReleaseStep::Release("c".into()));
    }

    #[test]
    fn replica_decisions() {
        let f = req(Some("a"), Some("b"), None);
        assert_eq!(as_replica("b", &f, &[]), ReplicaStep::Take);
        assert!(matches!(as_replica("c", &f, &[peer("b", 1, true)]), ReplicaStep::Wait(_)));
        assert_eq!(as_replica("c", &f, &[PeerReport { name: "b".into(), status: None }]), ReplicaStep::Race);
        assert_eq!(as_replica("c", &req(Some("a"), None, None), &[]), ReplicaStep::Race);
    }
}
