//! Who holds the cluster's virtual address (`vip`): the member that runs the writable primary
//! under a confirmed leader lock, and nobody else, ever, at the same time.
//!
//! keepalived decides by VRRP on its own and can hand the address to a member that is not the
//! primary; vip-manager follows the leader key and keeps the address while its agent is cut off.
//! Here the address follows the same lease as PostgreSQL itself.
//!
//! Invariants (rules: [`may_hold`], tested by name below):
//! * **Lease first.** Held only while this process's lock is confirmed and the fencing deadline
//!   ([`crate::HaNode::fence_deadline`]) lies ahead: a leader cut off from the DCS gives the
//!   address up when it fences PostgreSQL, before its lease could expire and another member could
//!   take the lock, so two members never hold it both believing they lead.
//! * **A writable primary.** Held only while the local server runs out of recovery (a standby
//!   leader, a replica or a stopped server never holds it).
//! * **Given up before the plan runs.** A cycle whose plan does anything but keep serving as
//!   that primary (stop, restart, demote, release the lock, hand over in a switchover) gives the
//!   address up before its first action, so clients lose the address before they lose the server
//!   rather than after. Only steps known to keep the primary serving keep the address: an action
//!   added later gives it up until it is listed here.

use crate::action::Action;
use crate::observe::{LocalPg, Millis};

/// Whether the member may hold the address through the plan `actions` decided at `now`, with its
/// lock's fencing deadline `fence_deadline` (`None`: it holds no lock).
pub fn may_hold(fence_deadline: Option<Millis>, now: Millis, local: &LocalPg, actions: &[Action]) -> bool {
    fence_deadline.is_some_and(|d| now < d) && local.process.is_primary() && actions.iter().all(keeps_serving)
}

/// Steps after which the primary still serves under its lock.
fn keeps_serving(action: &Action) -> bool {
    match action {
        Action::RenewLeader
        | Action::WriteStatus(_)
        | Action::PublishHistory { .. }
        | Action::WriteFailsafe(_)
        | Action::SyncSlots(_)
        | Action::ClearFailover
        | Action::WriteSync { .. }
        | Action::DeleteSync { .. }
        | Action::SetSynchronousStandbyNames(_)
        | Action::RecordInitialize { .. } => true,
        // Every job stops, replaces or restarts the server; every other step demotes it, stops
        // it or gives the lock up.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Job, StopMode};
    use crate::observe::{DataDir, PgProcess, RunningPg};

    fn running(in_recovery: bool) -> LocalPg {
        LocalPg { data: DataDir::Empty, process: PgProcess::Running(RunningPg { in_recovery, ..Default::default() }) }
    }

    const NOW: Millis = Millis(10_000);
    const AHEAD: Option<Millis> = Some(Millis(12_000));

    #[test]
    fn the_leader_running_a_primary_holds_it_while_it_keeps_serving() {
        let primary = running(false);
        assert!(may_hold(AHEAD, NOW, &primary, &[Action::RenewLeader, Action::SetSynchronousStandbyNames("*".into())]));
        assert!(may_hold(AHEAD, NOW, &primary, &[]), "a cycle with nothing to do keeps it");
    }

    #[test]
    fn no_lock_or_a_lease_at_its_fencing_deadline_gives_it_up() {
        let primary = running(false);
        assert!(!may_hold(None, NOW, &primary, &[Action::RenewLeader]), "no lock");
        assert!(!may_hold(Some(NOW), NOW, &primary, &[Action::RenewLeader]), "fencing now");
        assert!(!may_hold(Some(Millis(9_000)), NOW, &primary, &[]), "past the fencing deadline");
    }

    #[test]
    fn only_a_server_out_of_recovery_holds_it() {
        assert!(!may_hold(AHEAD, NOW, &running(true), &[Action::RenewLeader]), "a standby leader or a replica");
        assert!(
            !may_hold(AHEAD, NOW, &LocalPg { data: DataDir::Empty, process: PgProcess::Crashed }, &[]),
            "nothing running"
        );
    }

    #[test]
    fn a_plan_that_stops_demotes_or_hands_over_gives_it_up_first() {
        let primary = running(false);
        for step in [
            Action::Stop(StopMode::Fast),
            Action::ReleaseLeader { last_position: None },
            Action::StartJob(Job::Restart(crate::action::StartRole::Primary)),
            Action::StartJob(Job::Restart(crate::action::StartRole::Replica { upstream: None })),
            Action::Follow { upstream: None },
            Action::CancelJob,
        ] {
            assert!(!may_hold(AHEAD, NOW, &primary, &[Action::RenewLeader, step.clone()]), "{step:?}");
        }
    }
}
