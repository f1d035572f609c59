//! Table tests: synchronous replication.

use super::*;

use crate::model::SyncState;
use crate::observe::Walsender;
use crate::SyncMode;

/// `cluster(leader)` in synchronous `mode`, with the `sync` key written by `key_leader` listing
/// `voters` with `quorum`.
pub(super) fn sync_cluster(
    leader: Option<&str>,
    mode: SyncMode,
    key_leader: &str,
    voters: &[&str],
    quorum: usize,
) -> Cluster {
    let mut c = cluster(leader);
    c.config.as_mut().unwrap().synchronous_mode = Some(mode);
    let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
    c.sync = Some(SyncState::new(key_leader, &v, quorum));
    c.sync_revision = 11;
    c
}

pub(super) fn running(l: &LocalPg) -> &RunningPg {
    match &l.process {
        PgProcess::Running(r) => r,
        _ => unreachable!(),
    }
}

#[test]
fn a_promoted_member_acknowledges_nothing_until_the_sync_key_names_it() {
    let mut n = HaNode::new(settings());
    let c = sync_cluster(Some(ME), SyncMode::On, "n2", &["n1"], 0);
    let l = replica(Some(5002), 1000);
    let a = decide(&mut n, &obs(0, &c, &l));
    let set = a.iter().position(|x| *x == Action::SetSynchronousStandbyNames(crate::sync::placeholder(SyncMode::On)));
    let promote = a.iter().position(|x| *x == Action::StartJob(Job::Promote));
    assert!(set.is_some() && set < promote, "{a:?}");
    // Asynchronous clusters promote as before.
    let a = decide(&mut HaNode::new(settings()), &obs(0, &cluster(Some(ME)), &l));
    assert!(!a.iter().any(|x| matches!(x, Action::SetSynchronousStandbyNames(_))), "{a:?}");
}

#[test]
fn the_new_leader_claims_the_sync_key_before_naming_standbys() {
    let mut n = HaNode::new(settings());
    let c = sync_cluster(Some(ME), SyncMode::On, "n2", &["n1"], 0);
    let mut l = primary();
    if let PgProcess::Running(r) = &mut l.process {
        r.synchronous_standby_names = crate::sync::placeholder(SyncMode::On);
        r.walsenders = vec![Walsender {
            application_name: "n3".into(),
            state: "streaming".into(),
            sync_state: "async".into(),
            flush: Some(Lsn(1000)),
            ..Default::default()
        }];
    }
    let p = n.decide(&obs(0, &c, &l));
    let write = Action::WriteSync { state: SyncState::new(ME, &[], 0), expected_revision: 11 };
    let w = p.actions.iter().position(|x| *x == write);
    let s = p.actions.iter().position(|x| *x == Action::SetSynchronousStandbyNames("FIRST 1 (\"n3\")".into()));
    assert!(w.is_some() && w < s, "{:?}", p.actions);
    assert!(p.next_cycle <= Millis(SYNC_FOLLOW_UP_MS), "looks again soon to confirm n3");
    assert_eq!(running(&l).synchronous_standby_names, crate::sync::placeholder(SyncMode::On));
}

#[test]
fn a_setting_not_confirmed_in_time_is_set_again_before_anything_else() {
    let mut n = HaNode::new(settings());
    let c = sync_cluster(Some(ME), SyncMode::On, ME, &[], 0);
    let l = primary();
    n.advance(ActionResult::SyncNamesUnconfirmed("FIRST 1 (\"n2\")".into()));
    let a = decide(&mut n, &obs(0, &c, &l));
    assert_eq!(
        a.iter().filter(|x| matches!(x, Action::SetSynchronousStandbyNames(_) | Action::WriteSync { .. })).count(),
        1
    );
    assert!(a.contains(&Action::SetSynchronousStandbyNames("FIRST 1 (\"n2\")".into())), "{a:?}");
}

#[test]
fn a_leader_restarting_postgres_in_place_starts_it_with_what_the_key_vouches_for() {
    let mut n = HaNode::new(settings());
    let c = sync_cluster(Some(ME), SyncMode::Quorum, ME, &["n2", "n3"], 1);
    let l = stopped(ClusterState::InProduction, true);
    let a = decide(&mut n, &obs(0, &c, &l));
    assert_eq!(
        a,
        vec![
            Action::RenewLeader,
            Action::SetSynchronousStandbyNames("ANY 1 (\"n2\",\"n3\")".into()),
            Action::StartJob(Job::Start(StartRole::Primary)),
        ]
    );
}

#[test]
fn mode_on_only_a_listed_standby_races_and_others_ahead_do_not_hold_it_back() {
    // n2 is the synchronous standby; n1 (me) is asynchronous and further ahead: it must not race.
    let c = sync_cluster(None, SyncMode::On, "n3", &["n2"], 0);
    let l = replica(None, 1000);
    let peers = [peer("n2", 990, false)];
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(p.message.contains("not a synchronous standby"), "{}", p.message);
    // Now n1 is the listed one; n2, asynchronous and ahead, does not stop it.
    let c = sync_cluster(None, SyncMode::On, "n3", &["n1"], 0);
    let peers = [peer("n2", 1010, false)];
    let a = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::AcquireLeader]);
    // The former leader itself may always race.
    let c = sync_cluster(None, SyncMode::On, ME, &["n2"], 0);
    let peers = [peer("n2", 1000, false)];
    let a = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::AcquireLeader]);
}

#[test]
fn quorum_mode_races_only_with_enough_votes() {
    let c = sync_cluster(None, SyncMode::Quorum, "old", &["n1", "n2", "n3"], 1);
    let l = replica(None, 1000);
    let voted = [peer("n2", 1000, false), PeerReport { name: "n3".into(), status: None }];
    let a = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&voted), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::AcquireLeader]);
    let silent = [PeerReport { name: "n2".into(), status: None }, PeerReport { name: "n3".into(), status: None }];
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&silent), ..obs(0, &c, &l) });
    assert!(p.actions.is_empty() && p.message.contains("voters"), "{p:?}");
}

#[test]
fn the_former_leader_is_not_held_back_by_a_branch_it_left_behind() {
    // We promoted onto timeline 2 and went down at once, before any voter joined the key. The
    // primary we replaced (n2) still has its unacknowledged WAL of timeline 1 past the fork, so
    // it looks ahead; it cannot rewind while there is no leader.
    let c = sync_cluster(None, SyncMode::Quorum, ME, &[], 0);
    let mut l = replica(None, 1000);
    if let PgProcess::Running(r) = &mut l.process {
        r.timeline = 2;
    }
    let on = |name: &str, wal: u64, timeline: u32| PeerReport {
        name: name.into(),
        status: Some(PeerStatus { is_primary: false, wal: Lsn(wal), timeline, can_fail_over: true, priority: 1 }),
    };
    let diverged = [on("n2", 5000, 1), on("n3", 900, 1)];
    let a = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&diverged), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::AcquireLeader]);
    // A peer ahead on our own timeline (or a newer one) still holds us back.
    for timeline in [2, 3] {
        let ahead = [on("n2", 5000, timeline)];
        let p = HaNode::new(settings()).decide(&Observation { peers: Some(&ahead), ..obs(0, &c, &l) });
        assert!(p.actions.is_empty() && p.message.contains("ahead"), "{p:?}");
    }
    // So does a branch for a member that was not the leader: it cannot tell acknowledged WAL
    // from a branch by itself.
    let c = sync_cluster(None, SyncMode::Quorum, "n3", &[ME, "n2"], 0);
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&diverged), ..obs(0, &c, &l) });
    assert!(p.actions.is_empty() && p.message.contains("ahead"), "{p:?}");
    // Still alive as primary on its branch: nobody races.
    let c = sync_cluster(None, SyncMode::Quorum, ME, &[], 0);
    let alive = [PeerReport {
        name: "n2".into(),
        status: Some(PeerStatus { is_primary: true, wal: Lsn(5000), timeline: 1, can_fail_over: true, priority: 1 }),
    }];
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&alive), ..obs(0, &c, &l) });
    assert!(p.actions.is_empty() && p.message.contains("still alive"), "{p:?}");
}

#[test]
fn a_failover_to_an_asynchronous_member_is_refused_unless_forced() {
    let mut c = sync_cluster(None, SyncMode::On, "n3", &["n2"], 0);
    c.failover = failover(None, Some(ME));
    let l = replica(None, 1000);
    let peers = [peer("n2", 1000, false)];
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert_eq!(p.actions, vec![Action::ClearFailover], "{}", p.message);
    assert!(p.message.contains("force"), "{}", p.message);
    c.failover.as_mut().unwrap().force = true;
    let a = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::AcquireLeader]);
}

#[test]
fn the_leader_refuses_a_switchover_to_a_member_that_is_not_synchronous() {
    let mut c = sync_cluster(Some(ME), SyncMode::On, ME, &["n2"], 0);
    c.failover = failover(Some(ME), Some("n3"));
    let mut l = primary();
    if let PgProcess::Running(r) = &mut l.process {
        r.synchronous_standby_names = "FIRST 1 (\"n2\")".into();
        r.walsenders = ["n2", "n3"]
            .iter()
            .map(|n| Walsender {
                application_name: n.to_string(),
                state: "streaming".into(),
                sync_state: if *n == "n2" { "sync" } else { "async" }.into(),
                write: Some(Lsn(1000)),
                flush: Some(Lsn(1000)),
                replay: Some(Lsn(1000)),
            })
            .collect();
    }
    let peers = [peer("n2", 1000, false), peer("n3", 1000, false)];
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert!(p.actions.contains(&Action::ClearFailover), "{p:?}");
    assert!(p.message.contains("n3 refused: candidate name does not match with sync_standby"), "{}", p.message);
    // To the synchronous standby it goes ahead.
    c.failover = failover(Some(ME), Some("n2"));
    let a = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
    // Unless it no longer streams from the leader: then stopping would only leave the cluster
    // without a primary, so the leader refuses and keeps leading.
    if let PgProcess::Running(r) = &mut l.process {
        r.walsenders.retain(|w| w.application_name != "n2");
    }
    let p = HaNode::new(settings()).decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert!(p.actions.contains(&Action::ClearFailover), "{p:?}");
    assert!(p.message.contains("n2 is not a synchronous standby streaming from the leader"), "{}", p.message);
}

#[test]
fn replicas_keep_the_placeholder_in_force_so_a_promotion_needs_no_reload() {
    let c = sync_cluster(Some("n2"), SyncMode::Quorum, "n2", &[], 0);
    let mut l = replica(Some(5002), 1000);
    let placeholder = crate::sync::placeholder(SyncMode::Quorum);
    let a = decide(&mut HaNode::new(settings()), &obs(0, &c, &l));
    assert_eq!(a, vec![slots_for(false, &["n2", "n3"]), Action::SetSynchronousStandbyNames(placeholder.clone())]);
    if let PgProcess::Running(r) = &mut l.process {
        r.synchronous_standby_names = placeholder;
    }
    assert_eq!(decide(&mut HaNode::new(settings()), &obs(0, &c, &l)), vec![slots_for(false, &["n2", "n3"])]);
    // Holding the lock, it promotes without touching the setting.
    let c = sync_cluster(Some(ME), SyncMode::Quorum, "n2", &[], 0);
    let a = decide(&mut HaNode::new(settings()), &obs(0, &c, &l));
    assert!(!a.iter().any(|x| matches!(x, Action::SetSynchronousStandbyNames(_))), "{a:?}");
    assert!(a.contains(&Action::StartJob(Job::Promote)));
}

#[test]
fn a_forced_failover_hands_over_to_an_asynchronous_member_cleanly() {
    let mut c = sync_cluster(Some(ME), SyncMode::On, ME, &["n2"], 0);
    c.failover = failover(None, Some("n3"));
    c.failover.as_mut().unwrap().force = true;
    let mut l = primary();
    if let PgProcess::Running(r) = &mut l.process {
        r.synchronous_standby_names = "FIRST 1 (\"n2\")".into();
    }
    let peers = [peer("n2", 1000, false), peer("n3", 1000, false)];
    let mut n = HaNode::new(settings());
    let a = decide(&mut n, &Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert_eq!(a, vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
    // Stopped: n3 has the shutdown checkpoint, so the lock goes.
    let down = stopped(ClusterState::ShutDown, false);
    let caught_up = [peer("n3", 960, false)];
    assert_eq!(decide(&mut n, &Observation { peers: Some(&caught_up), ..obs(100, &c, &down) }), vec![released(&down)]);
}

#[test]
fn the_managed_synchronous_standby_names_follow_the_mode_and_survive_an_agent_restart() {
    let mut n = HaNode::new(settings());
    let mut l = primary();
    if let PgProcess::Running(r) = &mut l.process {
        r.synchronous_standby_names = "FIRST 1 (\"n2\")".into();
    }
    // Asynchronous: the configuration's own value applies.
    n.observe_sync_names(&l);
    assert_eq!(n.managed_sync_names(), None);
    // Synchronous mode seen; the agent restarted under a running primary: its value is kept.
    let c = sync_cluster(Some(ME), SyncMode::On, ME, &["n2"], 0);
    decide(&mut n, &obs(0, &c, &l));
    n.observe_sync_names(&l);
    assert_eq!(n.managed_sync_names(), Some("FIRST 1 (\"n2\")"));
    // What the agent wrote since wins over what the server shows until it reloads.
    n.advance(ActionResult::SyncNamesWritten("FIRST 1 (\"n3\")".into()));
    n.observe_sync_names(&l);
    assert_eq!(n.managed_sync_names(), Some("FIRST 1 (\"n3\")"));
    // The leadership ending does not forget it (a replica keeps the placeholder in force).
    decide(&mut n, &obs(1_000, &sync_cluster(Some("n2"), SyncMode::On, "n2", &[ME], 0), &replica(Some(5002), 1000)));
    assert_eq!(n.managed_sync_names(), Some("FIRST 1 (\"n3\")"));
    // Synchronous mode turned off: forgotten.
    decide(&mut n, &obs(2_000, &cluster(Some("n2")), &replica(Some(5002), 1000)));
    n.observe_sync_names(&l);
    assert_eq!(n.managed_sync_names(), None);
}
