//! Table tests: standby clusters. The lock holder follows the other cluster and is never
//! promoted; failover, bootstrap and `demote-cluster`/`promote-cluster` keep that.

use super::handovers::failover;
use super::*;
use crate::standby_cluster::{makes_a_primary, StandbyCluster};

/// The section the tests write: the other cluster's primary at 10.0.0.9:5432.
fn remote() -> StandbyCluster {
    StandbyCluster { host: Some("10.0.0.9".into()), port: 5432, ..Default::default() }
}

/// `c` with `section` as `standby_cluster` in its dynamic configuration.
fn with_section(mut c: Cluster, section: serde_json::Value) -> Cluster {
    let cfg = c.config.get_or_insert_with(DynamicConfig::default);
    cfg.extra.insert("standby_cluster".into(), section);
    c
}

/// `c` as a standby cluster of [`remote`].
fn standby(c: Cluster) -> Cluster {
    with_section(c, serde_json::json!({"host": "10.0.0.9", "port": 5432}))
}

#[test]
fn the_lock_holder_in_recovery_follows_the_other_cluster_and_is_never_promoted() {
    let mut n = HaNode::new(settings());
    hold(&mut n);
    let c = standby(cluster(Some(ME)));
    let l = replica(Some(5002), 1000);
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(
        p.actions,
        // No status write: the key already holds the position received (1000).
        vec![Action::RenewLeader, slots_before_promotion(&["n2", "n3"]), Action::FollowRemote(remote()),]
    );
    assert!(p.message.contains("the standby leader with the lock; following 10.0.0.9:5432"), "{}", p.message);
    n.advance(ActionResult::Configured(StartRole::StandbyLeader(remote())));
    let p = n.decide(&obs(1, &c, &l));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::FollowRemote(_)) || makes_a_primary(a)), "{p:?}");
    assert!(p.message.starts_with("no action. I am (n1), the standby leader with the lock"), "{}", p.message);
    assert!(n.standby_leader(&l, Millis(1)), "published as standby_leader");
    assert!(!n.standby_leader(&primary(), Millis(1)), "a primary being demoted is published as the primary");
    assert_eq!(n.callback_role(), Role::StandbyLeader);
    // A changed section (another host) is followed again.
    let moved = with_section(cluster(Some(ME)), serde_json::json!({"host": "10.0.0.10"}));
    let a = decide(&mut n, &obs(2, &moved, &l));
    let other = StandbyCluster { host: Some("10.0.0.10".into()), ..remote() };
    assert!(a.contains(&Action::FollowRemote(other)), "{a:?}");
}

#[test]
fn the_healthiest_replica_of_a_leaderless_standby_cluster_takes_the_lock_to_follow_the_other_cluster() {
    let mut n = HaNode::new(settings());
    let c = standby(cluster(None));
    let l = replica(None, 1000);
    let peers = [peer("n2", 990, false), peer("n3", 990, false)];
    assert_eq!(decide(&mut n, &Observation { peers: Some(&peers), ..obs(0, &c, &l) }), vec![Action::AcquireLeader]);
    hold(&mut n);
    let a = decide(&mut n, &obs(1, &standby(cluster(Some(ME))), &l));
    assert!(a.contains(&Action::FollowRemote(remote())) && !a.iter().any(makes_a_primary), "{a:?}");
}

#[test]
fn replicas_of_a_standby_cluster_cascade_from_the_standby_leader() {
    let mut n = HaNode::new(settings());
    let c = standby(cluster(Some("n2")));
    let a = decide(&mut n, &obs(0, &c, &replica(Some(5003), 1000)));
    assert!(a.contains(&Action::Follow { upstream: Some(up("n2", 5002)) }), "{a:?}");
    let a = decide(&mut n, &obs(1, &c, &stopped(ClusterState::ShutDownInRecovery, false)));
    assert_eq!(a, vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]);
}

#[test]
fn a_running_primary_that_finds_the_section_restarts_as_the_standby_leader_keeping_the_lock() {
    // `demote-cluster`.
    let mut n = HaNode::new(settings());
    hold(&mut n);
    let p = n.decide(&obs(0, &standby(cluster(Some(ME))), &primary()));
    assert_eq!(
        p.actions,
        vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::StandbyLeader(remote())))]
    );
    assert!(p.message.contains("demoting to the standby leader"), "{}", p.message);
    // Not in maintenance mode.
    let mut paused = standby(cluster(Some(ME)));
    paused.config.as_mut().unwrap().pause = Some(true);
    assert_eq!(decide(&mut n, &obs(1, &paused, &primary())), vec![Action::RenewLeader]);
}

#[test]
fn removing_the_section_promotes_the_standby_leader() {
    // `promote-cluster`.
    let mut n = HaNode::new(settings());
    hold(&mut n);
    n.advance(ActionResult::Configured(StartRole::StandbyLeader(remote())));
    let a = decide(&mut n, &obs(0, &cluster(Some(ME)), &replica(None, 1000)));
    assert_eq!(a.last(), Some(&Action::StartJob(Job::Promote)), "{a:?}");
}

#[test]
fn a_new_standby_cluster_is_bootstrapped_by_copying_the_other_cluster() {
    let mut n = HaNode::new(settings());
    let fresh = standby(Cluster::default());
    assert_eq!(decide(&mut n, &obs(0, &fresh, &empty())), vec![Action::TryInitialize]);
    n.advance(ActionResult::InitializeRace { won: true });
    let p = n.decide(&obs(1, &fresh, &empty()));
    assert_eq!(p.actions, vec![Action::StartJob(Job::BootstrapStandby(remote()))]);
    assert!(p.message.contains("bootstrapping a standby cluster from 10.0.0.9:5432"), "{}", p.message);
    // The copy done, the member records the cluster, takes the lock, and starts following.
    let copied = stopped(ClusterState::ShutDownInRecovery, false);
    let finished = Observation { job: Some(JobState::Finished(JobKind::Bootstrap, Ok(()))), ..obs(2, &fresh, &copied) };
    assert_eq!(
        decide(&mut n, &finished),
        vec![Action::RecordInitialize { sysid: "7000".into() }, Action::AcquireLeader]
    );
    hold(&mut n);
    let mine = standby(cluster(Some(ME)));
    assert_eq!(
        decide(&mut n, &obs(3, &mine, &copied)),
        vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::StandbyLeader(remote())))]
    );
}

#[test]
fn the_standby_leader_never_starts_as_a_primary_whatever_its_data_directory_was() {
    for state in [ClusterState::ShutDown, ClusterState::ShutDownInRecovery, ClusterState::InProduction] {
        let mut n = HaNode::new(settings());
        hold(&mut n);
        let a = decide(&mut n, &obs(0, &standby(cluster(Some(ME))), &stopped(state, true)));
        assert_eq!(
            a,
            vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::StandbyLeader(remote())))],
            "{state:?}"
        );
    }
}

#[test]
fn an_operators_restart_of_the_standby_leader_keeps_it_following_the_other_cluster() {
    let mut n = HaNode::new(settings());
    hold(&mut n);
    let c = standby(cluster(Some(ME)));
    let l = replica(None, 1000);
    let p = n.decide(&Observation { request: Some(Request::Restart), ..obs(0, &c, &l) });
    assert_eq!(
        p.actions,
        vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::StandbyLeader(remote())))]
    );
}

#[test]
fn an_unreadable_section_takes_no_lock_and_makes_no_primary() {
    let bad = |c: Cluster| with_section(c, serde_json::json!({"port": 5432}));
    let mut n = HaNode::new(settings());
    let peers = [peer("n2", 990, false), peer("n3", 990, false)];
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(0, &bad(cluster(None)), &replica(None, 1000)) });
    assert!(!p.actions.contains(&Action::AcquireLeader), "{p:?}");
    assert!(p.message.contains("its standby_cluster section cannot be read"), "{}", p.message);
    let mut n = HaNode::new(settings());
    assert_eq!(decide(&mut n, &obs(0, &bad(Cluster::default()), &empty())), vec![]);
    let mut n = HaNode::new(settings());
    hold(&mut n);
    let a = decide(&mut n, &obs(0, &bad(cluster(Some(ME))), &replica(None, 1000)));
    assert!(!a.iter().any(makes_a_primary), "{a:?}");
}

#[test]
fn a_switchover_inside_a_standby_cluster_stops_the_standby_leader_and_hands_the_lock_over() {
    let mut n = HaNode::new(settings());
    hold(&mut n);
    n.advance(ActionResult::Configured(StartRole::StandbyLeader(remote())));
    let c = Cluster { failover: failover(Some(ME), Some("n2")), ..standby(cluster(Some(ME))) };
    let peers = [peer("n2", 1000, false), peer("n3", 990, false)];
    let a = decide(&mut n, &Observation { peers: Some(&peers), ..obs(0, &c, &replica(Some(5002), 1000)) });
    assert_eq!(a, vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
}

#[test]
fn a_standby_leader_paused_for_insufficient_settings_is_restarted_as_the_standby_leader() {
    use crate::hot_standby::ReplayPause;
    let mut n = HaNode::new(settings());
    hold(&mut n);
    let l = super::hot_standby_settings::replica_below_control(100, 150, ReplayPause::Paused);
    let a = decide(&mut n, &obs(0, &standby(cluster(Some(ME))), &l));
    assert_eq!(a.last(), Some(&Action::StartJob(Job::Restart(StartRole::StandbyLeader(remote())))), "{a:?}");
    assert!(!a.iter().any(makes_a_primary), "{a:?}");
}
