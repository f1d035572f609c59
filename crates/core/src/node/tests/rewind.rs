//! Table tests: a former primary or a replica that went past the fork, pg_rewind and its
//! failures.

use super::*;

#[test]
fn former_primary_rewinds_before_following_the_new_leader() {
    let mut n = HaNode::new(settings());
    let c = promoted(cluster(Some("n2")));
    let l = stopped(ClusterState::InProduction, true);
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::StartJob(Job::Rewind(up("n2", 5002)))]);
    let mut o = obs(1, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Rewind, Ok(())));
    assert_eq!(
        decide(&mut n, &o),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

/// n2 leads on timeline 2, which forked off timeline 1 at 1000.
fn forked_at_1000() -> Cluster {
    let mut c = promoted(cluster(Some("n2")));
    c.history = vec![crate::model::HistoryEntry {
        timeline: 1,
        lsn: Lsn(1000),
        reason: "promote".into(),
        timestamp: None,
        new_leader: None,
    }];
    c
}

/// Whether `actions` stop PostgreSQL.
fn stops(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Stop(_)))
}

/// A replica that replayed to `wal`, with its WAL receiver on `receiver` (not streaming).
fn replica_receiving(wal: u64, streaming: bool, receiver: Option<u32>) -> LocalPg {
    let mut l = replica(Some(5002), wal);
    let PgProcess::Running(r) = &mut l.process else { unreachable!() };
    (r.streaming, r.receiver_timeline) = (streaming, receiver);
    l
}

#[test]
fn a_replica_that_replayed_past_the_fork_is_stopped_and_rewound() {
    // n2 leads on timeline 2, which forked off timeline 1 at 1000. This member was the primary
    // of timeline 1 and was started read-only before timeline 2 existed: its control file says
    // "in archive recovery", but it replayed its own WAL to 1100.
    let mut n = HaNode::new(settings());
    let c = forked_at_1000();
    // Its WAL receiver asks the leader for timeline 1, which the leader refuses past the fork.
    let waiting = |wal: u64| replica_receiving(wal, false, Some(1));
    let behind = waiting(1000);
    assert!(!decide(&mut n, &obs(0, &c, &behind)).iter().any(|a| matches!(a, Action::Stop(_))), "at the fork: fine");
    let past = waiting(1100);
    // Stuck there, replaying nothing, for as long as a receiver needs to reconnect.
    for t in [1, 5_000, DIVERGED_AFTER_MS] {
        assert!(!stops(&decide(&mut n, &obs(t, &c, &past))), "not yet at {t} ms");
    }
    let p = n.decide(&obs(DIVERGED_AFTER_MS + 1, &c, &past));
    assert_eq!(p.actions, vec![Action::Stop(StopMode::Fast)]);
    assert!(p.message.contains("past where the leader's timeline forked off it (0/3E8)"), "{}", p.message);
    // Stopped cleanly in recovery, it is rewound, not started again as it was.
    let down = stopped(ClusterState::ShutDownInRecovery, false);
    assert_eq!(decide(&mut n, &obs(20_000, &c, &down)), vec![Action::StartJob(Job::Rewind(up("n2", 5002)))]);
    let mut o = obs(20_001, &c, &down);
    o.job = Some(JobState::Finished(JobKind::Rewind, Ok(())));
    assert_eq!(
        decide(&mut n, &o),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
    // Without pg_rewind allowed it only says what is needed.
    let mut no_rewind = HaNode::new(NodeSettings { use_pg_rewind: Some(false), ..settings() });
    no_rewind.decide(&obs(0, &c, &past));
    let p = no_rewind.decide(&obs(DIVERGED_AFTER_MS, &c, &past));
    assert!(p.actions.is_empty() && p.message.contains("needs pg_rewind or reinitialize"), "{p:?}");
}

#[test]
fn a_replica_that_went_on_to_the_new_timeline_by_the_archive_is_not_taken_for_diverged() {
    // Seen in Patroni's priority_failover scenario: the replica restored the new timeline's
    // history and WAL through restore_command and replays it past the fork, while its WAL
    // receiver still names timeline 1 (the last one it streamed) because the leader just went
    // away. It keeps replaying, or its receiver reconnects on timeline 2: never stopped.
    let mut n = HaNode::new(settings());
    let c = forked_at_1000();
    for (t, wal) in [(0, 1100), (4_000, 1100), (8_000, 1200), (16_000, 1200)] {
        let p = n.decide(&obs(t, &c, &replica_receiving(wal, false, Some(1))));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::Stop(_))), "at {t} ms: {p:?}");
    }
    assert!(!stops(&decide(&mut n, &obs(17_000, &c, &replica_receiving(1200, true, Some(2))))));
    // Stopped (by an operator, say) with its last restartpoint still on timeline 1 but its
    // replay on timeline 2: the control file's recovery timeline says so, and it is started
    // again, not rewound.
    let mut down = stopped(ClusterState::ShutDownInRecovery, false);
    let DataDir::Initialized(ctl) = &mut down.data else { unreachable!() };
    ctl.min_recovery_timeline = 2;
    assert_eq!(
        decide(&mut n, &obs(18_000, &c, &down)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn a_healthy_replica_whose_control_file_lags_is_not_taken_for_diverged() {
    // Same history as above, but this replica already replays timeline 2 past the fork: only
    // its control file (the last restartpoint) still says timeline 1.
    let mut n = HaNode::new(settings());
    let c = forked_at_1000();
    let with = |streaming: bool, receiver: Option<u32>| replica_receiving(1100, streaming, receiver);
    for (streaming, receiver, why) in [
        (true, Some(2), "streaming the leader's timeline"),
        (false, Some(2), "its receiver is on the leader's timeline, between two connections"),
        (false, None, "no WAL receiver: the control file's timeline is all there is, and it lags"),
        (true, Some(1), "streaming: its upstream accepted its start point"),
    ] {
        let p = n.decide(&obs(0, &c, &with(streaming, receiver)));
        assert!(!p.actions.iter().any(|a| matches!(a, Action::Stop(_))), "{why}: {p:?}");
    }
    // Stopped for any other reason with a control file on timeline 1, it is rewound only if it
    // was a primary: a replica that was never taken for diverged starts again as it was.
    let down = stopped(ClusterState::ShutDownInRecovery, false);
    assert_eq!(
        decide(&mut n, &obs(1, &c, &down)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn a_stopped_replica_whose_wal_went_past_the_fork_is_rewound_before_it_starts() {
    // A former primary demoted while the DCS was away: started read-only, stopped, its control
    // file says "shut down in recovery", but its replay reached 1100 on timeline 1, past the
    // fork of the leader's timeline 2 at 1000. PostgreSQL would refuse to follow the leader.
    let mut n = HaNode::new(settings());
    let c = forked_at_1000();
    let mut down = stopped(ClusterState::ShutDownInRecovery, false);
    let DataDir::Initialized(ctl) = &mut down.data else { unreachable!() };
    (ctl.min_recovery_timeline, ctl.min_recovery_lsn) = (1, Lsn(1100));
    let p = n.decide(&obs(0, &c, &down));
    assert_eq!(p.actions, vec![Action::StartJob(Job::Rewind(up("n2", 5002)))]);
    assert!(
        p.message.contains("reached 0/44C on timeline 1, past where the leader's timeline forked off it"),
        "{}",
        p.message
    );
    // At the fork exactly it is a healthy replica that ended with timeline 1: started as is.
    let DataDir::Initialized(ctl) = &mut down.data else { unreachable!() };
    ctl.min_recovery_lsn = Lsn(1000);
    assert_eq!(
        decide(&mut HaNode::new(settings()), &obs(0, &c, &down)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn a_member_once_taken_for_diverged_but_found_on_the_leaders_timeline_forgets_it() {
    let mut n = HaNode::new(settings());
    let c = forked_at_1000();
    let l = replica_receiving(1100, false, Some(1));
    assert!(!stops(&decide(&mut n, &obs(0, &c, &l))));
    assert_eq!(decide(&mut n, &obs(DIVERGED_AFTER_MS, &c, &l)), vec![Action::Stop(StopMode::Fast)]);
    // Its clean stop wrote timeline 2 into the control file: no rewind, start it again.
    let mut down = stopped(ClusterState::ShutDownInRecovery, false);
    let DataDir::Initialized(ctl) = &mut down.data else { unreachable!() };
    ctl.timeline = 2;
    let start = vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))];
    assert_eq!(decide(&mut n, &obs(DIVERGED_AFTER_MS + 1, &c, &down)), start);
    // Crashed later on a control file that lags again, it is not rewound for the old suspicion.
    let crashed = stopped(ClusterState::InArchiveRecovery, true);
    assert_eq!(decide(&mut n, &obs(DIVERGED_AFTER_MS + 2, &c, &crashed)), start);
}

#[test]
fn a_rewind_that_failed_before_changing_anything_is_tried_again_later() {
    // The disk was full when pg_rewind's crash recovery ran: nothing was changed, so the member
    // tries again after a loop_wait, then after twice that, instead of waiting for an operator.
    let mut n = HaNode::new(settings());
    let c = promoted(cluster(Some("n2")));
    let l = stopped(ClusterState::InProduction, true);
    let rewind = vec![Action::StartJob(Job::Rewind(up("n2", 5002)))];
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), rewind);
    let untouched = || {
        Some(JobState::Finished(
            JobKind::Rewind,
            Err(JobError::RewindUntouched {
                status: "exit code 1".into(),
                output_tail: "No space left on device".into(),
            }),
        ))
    };
    let loop_wait_ms = n.config().loop_wait * 1000;
    let mut o = obs(1000, &c, &l);
    o.job = untouched();
    let p = n.decide(&o);
    assert!(p.actions.is_empty() && p.message.contains("trying again in"), "{p:?}");
    let early = n.decide(&obs(1000 + loop_wait_ms - 1, &c, &l));
    assert!(early.actions.is_empty() && early.next_cycle <= Millis(1000 + loop_wait_ms), "{early:?}");
    assert_eq!(decide(&mut n, &obs(1000 + loop_wait_ms, &c, &l)), rewind);
    let mut o = obs(2000 + loop_wait_ms, &c, &l);
    o.job = untouched();
    n.decide(&o);
    assert!(decide(&mut n, &obs(2000 + 2 * loop_wait_ms - 1, &c, &l)).is_empty(), "the wait doubled");
    assert_eq!(decide(&mut n, &obs(2000 + 3 * loop_wait_ms, &c, &l)), rewind);
    // With remove_data_directory_on_rewind_failure the operator asked for a fresh copy instead.
    let mut wipe = HaNode::new(NodeSettings { remove_data_directory_on_rewind_failure: true, ..settings() });
    decide(&mut wipe, &obs(0, &c, &l));
    let mut o = obs(1, &c, &l);
    o.job = untouched();
    assert_eq!(decide(&mut wipe, &o), vec![Action::WipeDataDir]);
    assert_eq!(super::rewind_retry_secs(10, 0), 10);
    assert_eq!(super::rewind_retry_secs(10, 3), 80);
    assert_eq!(super::rewind_retry_secs(10, 40), 300);
}

#[test]
fn a_rewind_whose_source_was_down_is_tried_again_not_given_up() {
    // The new leader crashed too (back-to-back failovers): pg_rewind was never started, so the
    // data directory is intact and the next leader is worth a try.
    let mut n = HaNode::new(settings());
    let c = promoted(cluster(Some("n2")));
    let l = stopped(ClusterState::InProduction, true);
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::StartJob(Job::Rewind(up("n2", 5002)))]);
    let mut o = obs(1, &c, &l);
    let e = JobError::RewindSourceUnavailable { source_name: "n2".into(), reason: "connection refused".into() };
    o.job = Some(JobState::Finished(JobKind::Rewind, Err(e)));
    let p = n.decide(&o);
    assert!(p.actions.is_empty() && p.message.contains("trying again"), "{p:?}");
    assert_eq!(decide(&mut n, &obs(2, &c, &l)), vec![Action::StartJob(Job::Rewind(up("n2", 5002)))]);
}

#[test]
fn failed_rewind_waits_for_an_operator_unless_wiping_is_allowed() {
    let c = promoted(cluster(Some("n2")));
    let l = stopped(ClusterState::ShutDown, false);
    let failed = |n: &mut HaNode| {
        let mut o = obs(1, &c, &l);
        o.job = Some(JobState::Finished(JobKind::Rewind, Err("could not connect".into())));
        decide(n, &o)
    };
    let mut keep = HaNode::new(settings());
    assert!(failed(&mut keep).is_empty());
    // Only the variant says the data directory is untouched, not the wording of a message.
    let mut o = obs(1, &c, &l);
    o.job = Some(JobState::Finished(
        JobKind::Rewind,
        Err("pg_rewind failed before changing the data directory (exit code 1)".into()),
    ));
    let mut worded = HaNode::new(settings());
    assert!(decide(&mut worded, &o).is_empty());
    assert!(decide(&mut worded, &obs(100_000, &c, &l)).is_empty(), "waits for an operator");
    assert!(decide(&mut keep, &obs(2, &c, &l)).is_empty(), "does not loop on pg_rewind");
    let mut wipe = HaNode::new(NodeSettings { remove_data_directory_on_rewind_failure: true, ..settings() });
    assert_eq!(failed(&mut wipe), vec![Action::WipeDataDir]);
}

#[test]
fn a_leader_publishes_the_history_the_dcs_lacks() {
    // We promoted onto timeline 2, but the `history` write after the promotion failed (the DCS
    // was away): the replicas could not tell WAL past our fork from ours.
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let mut l = primary();
    if let PgProcess::Running(r) = &mut l.process {
        r.timeline = 2;
    }
    let publishes = |a: &[Action]| a.contains(&Action::PublishHistory { timeline: 2 });
    let first = decide(&mut n, &obs(0, &c, &l));
    assert!(publishes(&first));
    // After the leader's other work: a history file that cannot be read fails this action,
    // and the rest of the plan would not run.
    assert_eq!(first.last(), Some(&Action::PublishHistory { timeline: 2 }), "{first:?}");
    // Once it is there, nothing more.
    let mut with_history = c.clone();
    with_history.history = forked_at_1000().history;
    assert!(!publishes(&decide(&mut n, &obs(10_000, &with_history, &l))));
    // On timeline 1 there is no history to publish.
    assert!(!publishes(&decide(&mut HaNode::new(settings()), &obs(0, &c, &primary()))));
}
