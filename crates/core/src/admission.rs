//! Admission of switchover and failover requests: one rule for the REST API (before it writes
//! the `failover` key), the CLI (before it calls the API) and the running leader (when it reads
//! the key, whoever wrote it: patronictl or etcdctl as well).
//!
//! Two steps, as Patroni's `do_POST_failover` and `is_failover_possible` have them:
//! [`check_shape`] judges the request alone (what it names, whether it is scheduled, maintenance
//! mode), [`check_cluster`] judges it against the cluster (the named leader leads, the candidate
//! exists, synchronous mode). What neither can know, whether a candidate is healthy right now, is
//! asked of the candidates themselves ([`crate::eligibility`]).
//!
//! Invariant: in `synchronous_mode: on`, a request that would promote a member the `sync` key
//! does not vouch for (it may lack acknowledged commits) is refused unless it is a failover that
//! says `force`. The messages are Patroni's where Patroni has one, because patronictl prints them.

use crate::model::{Cluster, Failover, Member};
use crate::sync_mode::SyncMode;

/// Which request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// From a named leader (to a named candidate or the healthiest), maybe scheduled.
    Switchover,
    /// To a named candidate, now, with or without a leader.
    Failover,
}

impl Kind {
    /// `switchover` or `failover`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Switchover => "switchover",
            Kind::Failover => "failover",
        }
    }

    /// `Switchover` or `Failover`, to start a sentence.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Switchover => "Switchover",
            Kind::Failover => "Failover",
        }
    }

    /// `switched over` or `failed over`, as Patroni's messages say when it is done.
    pub fn past(self) -> &'static str {
        match self {
            Kind::Switchover => "switched over",
            Kind::Failover => "failed over",
        }
    }
}

/// A request, whoever made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// What is asked.
    pub kind: Kind,
    /// The leader it names.
    pub leader: Option<&'a str>,
    /// The candidate it names.
    pub candidate: Option<&'a str>,
    /// Whether it is scheduled for later.
    pub scheduled: bool,
    /// `force`: a failover to a member the `sync` key does not vouch for.
    pub force: bool,
}

impl<'a> Request<'a> {
    /// The request a `failover` key carries (a key naming a leader is a switchover).
    pub fn of_key(f: &'a Failover) -> Request<'a> {
        Request {
            kind: if f.leader.is_some() { Kind::Switchover } else { Kind::Failover },
            leader: f.leader.as_deref(),
            candidate: f.member.as_deref(),
            scheduled: f.scheduled_at.is_some(),
            force: f.force,
        }
    }
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A failover names no candidate.
    #[error("Failover could be performed only to a specific candidate")]
    FailoverWithoutCandidate,
    /// A switchover names no leader.
    #[error("Switchover could be performed only from a specific leader")]
    SwitchoverWithoutLeader,
    /// A failover is scheduled.
    #[error("Failover can't be scheduled")]
    FailoverScheduled,
    /// A switchover is scheduled in maintenance mode.
    #[error("Can't schedule switchover in the paused state")]
    ScheduledWhilePaused,
    /// Maintenance mode and no candidate named: nobody races in maintenance mode.
    #[error("Switchover is possible only to a specific candidate in a paused state")]
    PausedWithoutCandidate,
    /// The leader and the candidate are the same member.
    #[error("Switchover target and source are the same")]
    SameMember,
    /// The named leader does not hold the lock.
    #[error("leader name does not match")]
    LeaderMismatch,
    /// The named candidate is not a member.
    #[error("candidate does not exists")]
    UnknownCandidate,
    /// `synchronous_mode: on`: a switchover to a member the `sync` key does not list.
    #[error("candidate name does not match with sync_standby")]
    NotSynchronous,
    /// `synchronous_mode: on`: a failover without `force` to a member the `sync` key does not
    /// vouch for.
    #[error(
        "candidate name does not match with sync_standby: {0} may lack acknowledged commits; \
         send \"force\": true to fail over to it anyway"
    )]
    MayLackCommits(String),
    /// `synchronous_mode: on`, no candidate named, and the `sync` key lists nobody.
    #[error("{} is not possible: can not find sync_standby", .0.name())]
    NoSyncStandby(Kind),
    /// No candidate named and no member besides the leader.
    #[error("{} is not possible: cluster does not have members except leader", .0.name())]
    NoOtherMembers(Kind),
}

/// The request alone, `paused`: the cluster is in maintenance mode. `r.kind` is what was asked
/// for (the endpoint called, the verb typed).
pub fn check_shape(r: &Request<'_>, paused: bool) -> Result<(), Refusal> {
    match r.kind {
        Kind::Failover if r.candidate.is_none() => return Err(Refusal::FailoverWithoutCandidate),
        Kind::Switchover if r.leader.is_none() => return Err(Refusal::SwitchoverWithoutLeader),
        _ => {}
    }
    if r.scheduled {
        if r.kind == Kind::Failover {
            return Err(Refusal::FailoverScheduled);
        }
        if paused {
            return Err(Refusal::ScheduledWhilePaused);
        }
    }
    if paused && r.candidate.is_none() {
        return Err(Refusal::PausedWithoutCandidate);
    }
    if r.leader.is_some() && r.leader == r.candidate {
        return Err(Refusal::SameMember);
    }
    Ok(())
}

/// The request against `cluster` in synchronous mode `mode` (Patroni's `is_failover_possible`
/// before it asks the candidates). `Ok`: the members whose health decides, the named candidate
/// or every possible one. A request naming a leader counts as a switchover here.
pub fn check_cluster<'c>(cluster: &'c Cluster, mode: SyncMode, r: &Request<'_>) -> Result<Vec<&'c Member>, Refusal> {
    let kind = if r.leader.is_some() { Kind::Switchover } else { r.kind };
    if let Some(l) = r.leader {
        if !cluster.is_leader(l) {
            return Err(Refusal::LeaderMismatch);
        }
    }
    let sync_on = mode == SyncMode::On;
    match r.candidate {
        Some(c) => {
            if kind == Kind::Switchover && sync_on && !cluster.listed_in_sync_key(c) {
                return Err(Refusal::NotSynchronous);
            }
            let vouched = cluster.sync.as_ref().is_none_or(|s| s.vouches_for(c));
            if kind == Kind::Failover && sync_on && !vouched && !r.force {
                return Err(Refusal::MayLackCommits(c.to_string()));
            }
            cluster.member(c).map(|m| vec![m]).ok_or(Refusal::UnknownCandidate)
        }
        None if sync_on => {
            let listed: Vec<&Member> = cluster.members.iter().filter(|m| cluster.listed_in_sync_key(&m.name)).collect();
            if listed.is_empty() {
                return Err(Refusal::NoSyncStandby(kind));
            }
            Ok(listed)
        }
        None => {
            let others: Vec<&Member> =
                cluster.members.iter().filter(|m| !cluster.is_leader(&m.name) && !m.data.api_url.is_empty()).collect();
            if others.is_empty() {
                return Err(Refusal::NoOtherMembers(kind));
            }
            Ok(others)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Leader, MemberData, SyncState};

    fn req<'a>(kind: Kind, leader: Option<&'a str>, candidate: Option<&'a str>) -> Request<'a> {
        Request { kind, leader, candidate, scheduled: false, force: false }
    }

    fn cluster(members: &[&str], leader: &str) -> Cluster {
        Cluster {
            leader: Some(Leader { name: leader.into(), lease: 1, mod_revision: 1 }),
            members: members
                .iter()
                .map(|n| Member {
                    name: n.to_string(),
                    data: MemberData { api_url: format!("http://{n}:8008/patroni"), ..Default::default() },
                    lease: 1,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_request_alone() {
        use Kind::*;
        let ok = |r: Request, paused| check_shape(&r, paused);
        assert_eq!(ok(req(Failover, None, None), false), Err(Refusal::FailoverWithoutCandidate));
        assert_eq!(ok(req(Switchover, None, Some("b")), false), Err(Refusal::SwitchoverWithoutLeader));
        let scheduled = |kind, c| Request { scheduled: true, ..req(kind, Some("a"), c) };
        assert_eq!(ok(scheduled(Failover, Some("b")), false), Err(Refusal::FailoverScheduled));
        assert_eq!(ok(scheduled(Switchover, Some("b")), true), Err(Refusal::ScheduledWhilePaused));
        assert_eq!(ok(scheduled(Switchover, None), false), Ok(()));
        assert_eq!(ok(req(Switchover, Some("a"), None), true), Err(Refusal::PausedWithoutCandidate));
        assert_eq!(ok(req(Switchover, Some("a"), Some("b")), true), Ok(()));
        assert_eq!(ok(req(Switchover, Some("a"), Some("a")), false), Err(Refusal::SameMember));
        assert_eq!(ok(req(Failover, None, Some("b")), false), Ok(()));
    }

    #[test]
    fn the_request_against_the_cluster() {
        use Kind::*;
        let c = cluster(&["a", "b", "c"], "a");
        let names = |r: Result<Vec<&Member>, Refusal>| r.map(|v| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>());
        assert_eq!(
            names(check_cluster(&c, SyncMode::Off, &req(Switchover, Some("a"), None))),
            Ok(vec!["b".into(), "c".into()])
        );
        assert_eq!(
            names(check_cluster(&c, SyncMode::Off, &req(Switchover, Some("b"), None))),
            Err(Refusal::LeaderMismatch)
        );
        assert_eq!(
            names(check_cluster(&c, SyncMode::Off, &req(Failover, None, Some("z")))),
            Err(Refusal::UnknownCandidate)
        );
        assert_eq!(names(check_cluster(&c, SyncMode::Off, &req(Failover, None, Some("c")))), Ok(vec!["c".into()]));
        let alone = cluster(&["a"], "a");
        assert_eq!(
            check_cluster(&alone, SyncMode::Off, &req(Switchover, Some("a"), None)),
            Err(Refusal::NoOtherMembers(Switchover))
        );
        assert_eq!(
            Refusal::NoOtherMembers(Switchover).to_string(),
            "switchover is not possible: cluster does not have members except leader"
        );
    }

    #[test]
    fn synchronous_mode_admits_only_members_the_sync_key_vouches_for_unless_a_failover_is_forced() {
        use Kind::*;
        let mut c = cluster(&["a", "b", "c"], "a");
        c.sync = Some(SyncState::new("a", &["b".to_string()], 0));
        let on = SyncMode::On;
        assert!(check_cluster(&c, on, &req(Switchover, Some("a"), Some("b"))).is_ok());
        assert_eq!(check_cluster(&c, on, &req(Switchover, Some("a"), Some("c"))), Err(Refusal::NotSynchronous));
        assert_eq!(check_cluster(&c, on, &req(Failover, None, Some("c"))), Err(Refusal::MayLackCommits("c".into())));
        let forced = Request { force: true, ..req(Failover, None, Some("c")) };
        assert!(check_cluster(&c, on, &forced).is_ok());
        assert!(check_cluster(&c, on, &req(Failover, None, Some("b"))).is_ok());
        assert!(
            check_cluster(&c, SyncMode::Quorum, &req(Failover, None, Some("c"))).is_ok(),
            "quorum: the votes decide"
        );
        assert!(check_cluster(&c, SyncMode::Off, &req(Switchover, Some("a"), Some("c"))).is_ok());
        let listed: Vec<String> =
            check_cluster(&c, on, &req(Switchover, Some("a"), None)).unwrap().iter().map(|m| m.name.clone()).collect();
        assert_eq!(listed, vec!["b".to_string()]);
        c.sync = Some(SyncState::new("a", &[], 0));
        assert_eq!(check_cluster(&c, on, &req(Switchover, Some("a"), None)), Err(Refusal::NoSyncStandby(Switchover)));
        // A key left by a former leader vouches for nobody.
        c.sync = Some(SyncState::new("old", &["b".to_string()], 0));
        assert_eq!(check_cluster(&c, on, &req(Switchover, Some("a"), Some("b"))), Err(Refusal::NotSynchronous));
    }
}
