//! `standby_cluster` (Patroni's standby clusters: the leader replicates from another cluster
//! instead of being a primary) is not supported yet, and must not be ignored meanwhile: an agent
//! that ignored it would take the lock and promote the intended standby leader into an
//! independent primary, a second writable copy of the other cluster's data.
//!
//! So the key is refused wherever it can be written through Rampart ([`DynamicConfig::validate`]
//! serves `check-config`'s `bootstrap.dcs`, `PATCH`/`PUT /config` and `edit-config`; the
//! configuration crate refuses it at the top of a member's file), and when it reaches the DCS
//! anyway (written by another tool), [`gate`] keeps this member from taking the leader lock,
//! bootstrapping or promoting: it stays a replica, or waits. A member that already holds the lock
//! keeps it and keeps its PostgreSQL as it is (no demotion, no failover): the key adds no primary.
//!
//! [`DynamicConfig::validate`]: crate::DynamicConfig::validate

use crate::action::{Action, Answer, Job};

/// The reason given wherever the key is refused (after the key's name).
pub const UNSUPPORTED: &str = "standby clusters are not supported yet (a standby leader would run as an independent \
                               primary): remove the key";

/// The actions of a cycle with `standby_cluster` set, or `None` to keep them: no leader lock is
/// taken (no race, no bootstrap, no manual failover to this member) and nothing is promoted.
pub fn gate(actions: &[Action]) -> Option<Vec<Action>> {
    let refused = |a: &Action| {
        matches!(a, Action::AcquireLeader | Action::TryInitialize | Action::StartJob(Job::Promote | Job::Bootstrap))
    };
    if !actions.iter().any(refused) {
        return None;
    }
    Some(actions.iter().filter(|a| !refused(a)).cloned().collect())
}

/// The answer to an operator's request whose actions [`gate`] removed.
pub fn refused_answer() -> Answer {
    Answer::Refused(format!("standby_cluster is set in the dynamic configuration: {UNSUPPORTED}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{StartRole, StopMode};

    #[test]
    fn no_lock_is_taken_and_nothing_is_promoted_or_bootstrapped() {
        assert_eq!(gate(&[Action::AcquireLeader, Action::StartJob(Job::Promote)]), Some(vec![]));
        assert_eq!(gate(&[Action::TryInitialize]), Some(vec![]));
        assert_eq!(gate(&[Action::RenewLeader, Action::StartJob(Job::Promote)]), Some(vec![Action::RenewLeader]));
        assert_eq!(gate(&[Action::StartJob(Job::Bootstrap)]), Some(vec![]));
    }

    #[test]
    fn what_a_replica_or_a_holder_does_otherwise_is_kept() {
        for actions in [
            vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
            vec![Action::RenewLeader, Action::WriteStatus(Default::default())],
            vec![Action::Stop(StopMode::Fast), Action::ReleaseLeader { last_position: None }],
        ] {
            assert_eq!(gate(&actions), None, "{actions:?}");
        }
    }
}
