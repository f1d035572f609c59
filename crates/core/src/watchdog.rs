//! When the leader's watchdog is fed, left to run down, or disarmed: a pure rule, so its
//! safety argument is tested without a device.
//!
//! The watchdog resets the machine `timeout` after the last keepalive. It is armed while this
//! member holds the leader lock and runs a primary, or runs a job that can make it one (a
//! promotion, a start or restart: [`guards_a_primary`]), and disarmed, with the magic close, as
//! soon as it does not: a replica or a stopped PostgreSQL needs no reset. In
//! maintenance mode (pause) it is disarmed too, as in Patroni: a paused leader is not fenced, so
//! a reset would only take down a primary the operator asked to leave alone.
//!
//! **The safety rule kept here:** a keepalive is sent only while `now + timeout <= leader_until`,
//! where `leader_until` is the send time of the last successful lock renewal plus the lease's
//! ttl. Then, if the agent freezes at any moment, the machine resets no later than the lease
//! could expire, so no other member can have been promoted while this primary still takes
//! writes. While renewals fail (etcd unreachable) the keepalives stop by themselves; the agent's
//! own fencing stops PostgreSQL before the lease expires, and the next step disarms.
//!
//! **`mode: required`** ([`required_gate`]): while the agent reports that the watchdog cannot be
//! armed, this member takes no leader lock (no race, no manual failover, no bootstrap), and a
//! member holding the lock releases it, stopping its PostgreSQL first if it runs as primary: a
//! primary without a working watchdog is exactly what `required` forbids. As in Patroni, the
//! rule is off in maintenance mode.

use crate::action::{Action, Job, StartRole};
use crate::observe::{JobKind, Millis, PgProcess};

/// What to do with the watchdog after a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogStep {
    /// Arm it if it is not armed yet, then feed it.
    Keepalive,
    /// Leave it armed and unfed: it fires no later than the lease expires unless the agent
    /// stops PostgreSQL first.
    RunDown,
    /// Disarm it (magic close) if it is armed.
    Disarm,
}

/// The `primary` input of [`step`] after a cycle: PostgreSQL runs as primary, or a job is under
/// way that can leave it running as primary before the next cycle looks (a promotion, a start or
/// restart, a bootstrap).
///
/// Why the whole job: a start of the leader's PostgreSQL in place (after a crash, or after an
/// aborted switchover) makes it writable as soon as it accepts connections, with no promotion
/// in between. Counting only a promotion leaves the watchdog disarmed from that moment until the
/// next cycle observes the primary, and an agent that freezes in that window keeps a writable
/// primary past its lease (the seeded simulation finds such schedules). A member without the
/// lock is disarmed by [`step`] whatever this says, so a replica's start never arms it.
pub fn guards_a_primary(process: &PgProcess, job: Option<JobKind>) -> bool {
    process.is_primary() || job.is_some_and(may_leave_a_primary)
}

/// Whether a job of this kind can leave PostgreSQL running as primary: a promotion, a start or
/// restart, a bootstrap.
pub fn may_leave_a_primary(job: JobKind) -> bool {
    matches!(job, JobKind::Promote | JobKind::Start | JobKind::Restart | JobKind::Bootstrap)
}

/// Whether a job may start: one that can leave a primary running (`guarded`, see
/// [`may_leave_a_primary`]) is armed for before it starts, and with `mode: required` it starts
/// only on an armed device while this member holds the lock (`leading`). Refused, it does not run
/// (the next cycle sees the device unusable and gives the lock up).
pub fn job_may_start(guarded: bool, required: bool, armed: bool, leading: bool) -> bool {
    !(guarded && required && !armed && leading)
}

/// The step for a member whose lock is held `leader_until` (if at all), at `now`, with a
/// watchdog of `timeout_secs`; `primary` when PostgreSQL runs, or may be about to run, as primary
/// (see [`guards_a_primary`]); `paused` in maintenance mode.
pub fn step(leader_until: Option<Millis>, now: Millis, primary: bool, paused: bool, timeout_secs: u64) -> WatchdogStep {
    match leader_until {
        Some(until) if primary && !paused && now < until => {
            if now.plus_secs(timeout_secs) <= until {
                WatchdogStep::Keepalive
            } else {
                WatchdogStep::RunDown
            }
        }
        _ => WatchdogStep::Disarm,
    }
}

/// What `watchdog.mode: required` does to a cycle's `actions` while the watchdog cannot be armed
/// (see the module header). `holds_lock`: this member holds the leader lock; `primary`: its
/// PostgreSQL runs as primary; `job_running`: a background job owns PostgreSQL (left alone: the
/// agent starts no job that can make a primary without arming first, so a running one was
/// started guarded); `last_position`: what a release publishes ([`Action::ReleaseLeader`]).
/// Returns the actions to run instead, or `None` to keep them.
pub fn required_gate(
    holds_lock: bool,
    primary: bool,
    job_running: bool,
    last_position: Option<u64>,
    actions: &[Action],
) -> Option<Vec<Action>> {
    let stop_first = |mut rest: Vec<Action>| {
        if primary {
            rest.insert(0, Action::Stop(crate::action::StopMode::Immediate));
        }
        rest
    };
    if holds_lock {
        if job_running || actions.iter().any(|a| matches!(a, Action::ReleaseLeader { .. })) {
            return None;
        }
        return Some(stop_first(vec![Action::ReleaseLeader { last_position }]));
    }
    let takes = |a: &Action| matches!(a, Action::AcquireLeader | Action::TryInitialize);
    let makes_primary = |a: &Action| {
        matches!(a, Action::StartJob(Job::Promote | Job::Start(StartRole::Primary) | Job::Restart(StartRole::Primary)))
    };
    if !actions.iter().any(|a| takes(a) || makes_primary(a)) {
        return None;
    }
    // A primary that may not take the lock must not keep taking writes without one either (as
    // Patroni demotes a primary that is not the healthiest member).
    Some(stop_first(actions.iter().filter(|a| !takes(a) && !makes_primary(a)).cloned().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let t = Millis(100_000);
        let cases = [
            ("leader just renewed (ttl 10, timeout 5)", Some(t.plus_secs(10)), true, WatchdogStep::Keepalive),
            (
                "renewed 5 s ago: a keepalive now runs out exactly with the lease",
                Some(t.plus_secs(5)),
                true,
                WatchdogStep::Keepalive,
            ),
            ("renewed 5.001 s ago", Some(t.plus_ms(4_999)), true, WatchdogStep::RunDown),
            ("lock expired", Some(t), true, WatchdogStep::Disarm),
            ("no lock", None, true, WatchdogStep::Disarm),
            ("lock but PostgreSQL not primary", Some(t.plus_secs(10)), false, WatchdogStep::Disarm),
        ];
        assert_eq!(step(Some(t.plus_secs(10)), t, true, true, 5), WatchdogStep::Disarm, "paused");
        for (what, until, primary, want) in cases {
            assert_eq!(step(until, t, primary, false, 5), want, "{what}");
        }
    }

    #[test]
    fn a_job_that_can_leave_a_primary_counts_as_one() {
        use crate::observe::RunningPg;
        let primary = PgProcess::Running(RunningPg { in_recovery: false, ..Default::default() });
        let replica = PgProcess::Running(RunningPg { in_recovery: true, ..Default::default() });
        assert!(guards_a_primary(&primary, None));
        assert!(!guards_a_primary(&replica, None));
        assert!(!guards_a_primary(&PgProcess::Crashed, None));
        for kind in [JobKind::Promote, JobKind::Start, JobKind::Restart, JobKind::Bootstrap] {
            assert!(guards_a_primary(&PgProcess::Crashed, Some(kind)), "{kind:?}");
            assert!(guards_a_primary(&replica, Some(kind)), "{kind:?}");
        }
        for kind in [JobKind::Clone, JobKind::Rewind, JobKind::Reinitialize] {
            assert!(!guards_a_primary(&PgProcess::Stopped, Some(kind)), "{kind:?}");
        }
    }

    #[test]
    fn a_job_that_can_leave_a_primary_waits_for_a_required_device() {
        // (guarded, required, armed, leading) -> may start
        assert!(!job_may_start(true, true, false, true), "required, not armed, leading: refused");
        assert!(job_may_start(true, true, true, true), "armed");
        assert!(job_may_start(true, false, false, true), "mode automatic: a device that fails is no reason");
        assert!(job_may_start(true, true, false, false), "no lock: the start of a replica");
        assert!(job_may_start(false, true, false, true), "a clone or rewind leaves no primary");
    }

    #[test]
    fn required_but_unusable_keeps_a_member_from_leading() {
        use crate::action::StopMode;
        let stop = Action::Stop(StopMode::Immediate);
        let release = Action::ReleaseLeader { last_position: Some(7) };
        // (what, holds the lock, primary, job running, plan, gated plan)
        type Case = (&'static str, bool, bool, bool, Vec<Action>, Option<Vec<Action>>);
        let cases: [Case; 9] = [
            (
                "a replica winning the race does not take the lock",
                false,
                false,
                false,
                vec![Action::AcquireLeader],
                Some(vec![]),
            ),
            ("a member does not bootstrap", false, false, false, vec![Action::TryInitialize], Some(vec![])),
            (
                "after a bootstrap the system identifier is recorded but the lock is not taken; the primary stops",
                false,
                true,
                false,
                vec![Action::RecordInitialize { sysid: "7".into() }, Action::AcquireLeader],
                Some(vec![stop.clone(), Action::RecordInitialize { sysid: "7".into() }]),
            ),
            (
                "a leader running a primary stops it and releases the lock",
                true,
                true,
                false,
                vec![Action::RenewLeader],
                Some(vec![stop.clone(), release.clone()]),
            ),
            (
                "a leader about to promote releases the lock instead",
                true,
                false,
                false,
                vec![Action::RenewLeader, Action::StartJob(Job::Promote)],
                Some(vec![release.clone()]),
            ),
            ("a leader already releasing is left alone", true, true, false, vec![stop.clone(), release.clone()], None),
            ("a job in progress is not interrupted", true, false, true, vec![Action::RenewLeader], None),
            (
                "a replica following the leader is left alone",
                false,
                false,
                false,
                vec![Action::WriteStatus(Default::default())],
                None,
            ),
            (
                "a member without the lock never starts a primary",
                false,
                false,
                false,
                vec![Action::StartJob(Job::Start(StartRole::Primary))],
                Some(vec![]),
            ),
        ];
        for (what, holds, primary, job, actions, want) in cases {
            assert_eq!(required_gate(holds, primary, job, Some(7), &actions), want, "{what}");
        }
    }

    proptest! {
        /// Whatever the plan, a member whose required watchdog is unusable ends the cycle
        /// neither taking the lock nor keeping one, nor starting a primary.
        #[test]
        fn the_gate_never_lets_a_lock_or_a_primary_through(holds: bool, primary: bool, picks in proptest::collection::vec(0usize..7, 0..5)) {
            let release = Action::ReleaseLeader { last_position: Some(7) };
            let menu = [
                Action::AcquireLeader, Action::TryInitialize, Action::RenewLeader, Action::WriteStatus(Default::default()),
                Action::StartJob(Job::Promote), Action::StartJob(Job::Start(StartRole::Primary)), release.clone(),
            ];
            let actions: Vec<Action> = picks.iter().map(|&i| menu[i].clone()).collect();
            let out = required_gate(holds, primary, false, Some(7), &actions).unwrap_or(actions.clone());
            prop_assert!(!out.iter().any(|a| matches!(a, Action::AcquireLeader | Action::TryInitialize | Action::StartJob(Job::Promote | Job::Start(StartRole::Primary)))) || (holds && out.contains(&release.clone())));
            if holds {
                prop_assert!(out.contains(&release.clone()));
            }
        }
    }

    proptest! {
        /// Whatever the history, a keepalive never lets the watchdog fire after the lease ends.
        #[test]
        fn a_fed_watchdog_fires_before_the_lease_expires(
            until in 0u64..1_000_000, now in 0u64..1_000_000, timeout in 1u64..60, primary: bool,
        ) {
            if step(Some(Millis(until)), Millis(now), primary, false, timeout) == WatchdogStep::Keepalive {
                prop_assert!(now + timeout * 1000 <= until);
                prop_assert!(primary);
            }
        }
    }
}
