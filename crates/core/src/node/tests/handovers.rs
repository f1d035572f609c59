//! Table tests: switchover, failover and operators' requests.

use super::*;

use crate::model::Failover;

pub(super) fn failover(leader: Option<&str>, member: Option<&str>) -> Option<Failover> {
    Some(Failover { leader: leader.map(Into::into), member: member.map(Into::into), scheduled_at: None, force: false })
}

#[test]
fn switchover_stops_cleanly_then_releases_only_once_the_candidate_has_the_checkpoint() {
    let mut n = HaNode::new(settings());
    let c = Cluster { failover: failover(Some(ME), Some("n2")), ..cluster(Some(ME)) };
    let l = primary();
    let peers = [peer("n2", 1000, false), peer("n3", 1000, false)];
    let o = Observation { peers: Some(&peers), ..obs(0, &c, &l) };
    assert_eq!(decide(&mut n, &o), vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);

    // Stopped with its shutdown checkpoint at 900: n2 has not received it yet.
    let down = stopped(ClusterState::ShutDown, false);
    let behind = [peer("n2", 900, false)];
    let o = Observation { peers: Some(&behind), ..obs(100, &c, &down) };
    let p = n.decide(&o);
    assert_eq!(p.actions, vec![Action::RenewLeader], "{}", p.message);
    assert!(p.next_cycle <= Millis(400), "looks again soon");
    let caught_up = [peer("n2", 960, false)];
    let o = Observation { peers: Some(&caught_up), ..obs(200, &c, &down) };
    assert_eq!(decide(&mut n, &o), vec![Action::ReleaseLeader { last_position: Some(900) }]);
}

#[test]
fn switchover_is_abandoned_when_no_candidate_catches_up() {
    let mut n = HaNode::new(settings());
    let c = Cluster { failover: failover(Some(ME), Some("n2")), ..cluster(Some(ME)) };
    let l = primary();
    let peers = [peer("n2", 1000, false)];
    decide(&mut n, &Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    let down = stopped(ClusterState::ShutDown, false);
    let behind = [peer("n2", 900, false)];
    let o = Observation { peers: Some(&behind), ..obs(manual::CATCH_UP_TIMEOUT_MS + 1, &c, &down) };
    assert_eq!(
        decide(&mut n, &o),
        vec![Action::ClearFailover, Action::RenewLeader, Action::StartJob(Job::Start(StartRole::Primary))]
    );
}

#[test]
fn switchover_to_an_unhealthy_candidate_is_cleared_and_the_leader_stays() {
    let mut n = HaNode::new(settings());
    let c = Cluster { failover: failover(Some(ME), Some("n2")), ..cluster(Some(ME)) };
    let l = primary();
    let peers = [PeerReport { name: "n2".into(), status: None }];
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert!(p.actions.contains(&Action::ClearFailover));
    assert!(!p.actions.contains(&Action::Stop(StopMode::Fast)));
    assert!(p.message.contains("n2"), "{}", p.message);
}

#[test]
fn scheduled_switchover_waits_for_its_time() {
    let mut n = HaNode::new(settings());
    let mut c = cluster(Some(ME));
    c.failover = Some(Failover {
        leader: Some(ME.into()),
        member: Some("n2".into()),
        scheduled_at: Some("1970-01-01T00:01:00Z".into()),
        force: false,
    });
    let l = primary();
    let peers = [peer("n2", 1000, false)];
    let early = Observation { wall_clock_ms: 55_000, peers: Some(&peers), ..obs(0, &c, &l) };
    let p = n.decide(&early);
    assert!(!p.actions.contains(&Action::Stop(StopMode::Fast)));
    assert_eq!(p.next_cycle, Millis(5_000), "wakes up at the scheduled time, not a loop_wait later");
    let due = Observation { wall_clock_ms: 60_000, peers: Some(&peers), ..obs(30_000, &c, &l) };
    assert_eq!(decide(&mut n, &due), vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
}

#[test]
fn named_candidate_takes_the_lock_and_the_others_wait_for_it() {
    let c = Cluster { failover: failover(Some("n3"), Some(ME)), ..cluster(None) };
    let mut n = HaNode::new(settings());
    let lagging = replica(None, 10);
    assert_eq!(decide(&mut n, &obs(0, &c, &lagging)), vec![Action::AcquireLeader], "no lag race for the named one");

    let other = HaNode::new(NodeSettings { name: "n2".into(), ..settings() });
    let mut other = other;
    let peers = [peer("n1", 10, false)];
    let p = other.decide(&Observation { peers: Some(&peers), ..obs(0, &c, &replica(None, 1000)) });
    assert!(p.actions.is_empty(), "{p:?}");
    assert!(p.message.contains("n1"), "{}", p.message);
}

#[test]
fn named_candidate_streaming_from_a_cascade_parent_takes_over_but_not_while_on_the_old_primary() {
    let c = Cluster { failover: failover(Some("n3"), Some(ME)), ..cluster(None) };
    let mut n = HaNode::new(settings());
    // n2 is a replica (its own report says so): streaming from it proves nothing about n3.
    let peers = [peer("n2", 1000, false)];
    let via_n2 = replica(Some(5002), 1000);
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(0, &c, &via_n2) });
    assert_eq!(p.actions, vec![Action::AcquireLeader], "{}", p.message);
    // Still streaming from n3, the old primary, which does not answer: it may be alive.
    let via_n3 = replica(Some(5003), 1000);
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(100, &c, &via_n3) });
    assert!(p.actions.is_empty(), "{p:?}");
}

#[test]
fn new_leader_clears_the_request_when_it_promotes() {
    let mut n = HaNode::new(settings());
    let c = Cluster { failover: failover(Some("n3"), Some(ME)), ..cluster(Some(ME)) };
    let l = replica(None, 1000);
    let a = decide(&mut n, &obs(0, &c, &l));
    assert!(a.contains(&Action::ClearFailover) && a.last() == Some(&Action::StartJob(Job::Promote)), "{a:?}");
}

#[test]
fn refused_promotion_hands_the_lock_over_and_keeps_out_of_the_race() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = replica(None, 1000);
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Promote, Err("pre_promote exited with 1".into())));
    assert_eq!(decide(&mut n, &o), vec![released(&l)]);
    let unlocked = cluster(None);
    assert!(decide(&mut n, &obs(1_000, &unlocked, &l)).is_empty(), "no race right after");
    assert_eq!(decide(&mut n, &obs(31_000, &unlocked, &l)), vec![Action::AcquireLeader], "races again after a ttl");
}

#[test]
fn restart_request_restarts_in_the_current_role() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    let o = Observation { request: Some(Request::Restart), ..obs(0, &c, &l) };
    let p = n.decide(&o);
    assert_eq!(p.actions, vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::Primary))]);
    assert_eq!(p.answer, Some(Answer::Started));

    let c2 = cluster(Some("n2"));
    let r = replica(Some(5002), 1000);
    let p = n.decide(&Observation { request: Some(Request::Restart), ..obs(0, &c2, &r) });
    assert_eq!(p.actions, vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]);
}

#[test]
fn restart_request_starts_a_stopped_postgresql_as_patroni_does_in_maintenance_mode() {
    let paused = |mut c: Cluster| {
        c.config.as_mut().unwrap().pause = Some(true);
        c
    };
    let restart = |n: &mut HaNode, c: &Cluster, l: &LocalPg| {
        n.decide(&Observation { request: Some(Request::Restart), ..obs(0, c, l) })
    };
    // A replica stopped (or killed) by the operator starts again as a replica of the leader.
    let mut n = HaNode::new(settings());
    let c = paused(cluster(Some("n2")));
    for crashed in [false, true] {
        let p = restart(&mut n, &c, &stopped(ClusterState::ShutDownInRecovery, crashed));
        let want = Job::Restart(StartRole::Replica { upstream: Some(up("n2", 5002)) });
        assert_eq!((p.actions, p.answer), (vec![Action::StartJob(want)], Some(Answer::Started)));
    }
    // The leader's stopped primary starts as primary.
    let mine = paused(cluster(Some(ME)));
    let p = restart(&mut n, &mine, &stopped(ClusterState::ShutDown, false));
    assert_eq!(p.actions, vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::Primary))]);
    // A former primary behind the cluster's timeline needs pg_rewind, and an empty directory a clone.
    let p = restart(&mut n, &promoted(c.clone()), &stopped(ClusterState::ShutDown, false));
    assert!(matches!(&p.answer, Some(Answer::Refused(m)) if m.contains("pg_rewind")), "{p:?}");
    let p = restart(&mut n, &c, &empty());
    assert!(matches!(&p.answer, Some(Answer::Refused(m)) if m.contains("holds no cluster")), "{p:?}");
}

#[test]
fn reinitialize_is_refused_on_the_leader_and_clones_on_a_replica() {
    let mut n = HaNode::new(settings());
    let req = Some(Request::Reinitialize { force: false, from_leader: true });
    let c = cluster(Some(ME));
    let p = n.decide(&Observation { request: req.clone(), ..obs(0, &c, &primary()) });
    assert_eq!(p.answer, Some(Answer::Refused("I am the leader, can not reinitialize".into())));
    assert!(!p.actions.iter().any(|a| matches!(a, Action::StartJob(_))));

    let c2 = cluster(Some("n2"));
    let p = n.decide(&Observation { request: req, ..obs(0, &c2, &replica(Some(5002), 1)) });
    assert_eq!(p.actions, vec![Action::StartJob(Job::Reinitialize(up("n2", 5002)))]);
    assert_eq!(p.answer, Some(Answer::Started));
}

#[test]
fn a_member_reinitialized_in_maintenance_mode_is_started_to_follow_the_leader() {
    // Patroni's clone ends by starting the copy; in pause nothing else would.
    let mut n = HaNode::new(settings());
    let mut c = cluster(Some("n2"));
    c.config.as_mut().unwrap().pause = Some(true);
    let down = stopped(ClusterState::ShutDownInRecovery, false);
    let mut o = obs(0, &c, &down);
    o.job = Some(JobState::Finished(JobKind::Reinitialize, Ok(())));
    assert_eq!(
        decide(&mut n, &o),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
    // A member that was merely stopped in maintenance mode stays down.
    let mut n = HaNode::new(settings());
    assert_eq!(decide(&mut n, &obs(0, &c, &down)), vec![]);
}

#[test]
fn requests_are_refused_while_a_job_runs() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = replica(Some(5002), 1);
    let mut o = Observation { request: Some(Request::Restart), ..obs(0, &c, &l) };
    o.job = Some(JobState::Running(JobKind::Clone));
    assert!(matches!(n.decide(&o).answer, Some(Answer::Refused(m)) if m.contains("clone")));
    o.request = Some(Request::Reinitialize { force: false, from_leader: false });
    assert!(matches!(n.decide(&o).answer, Some(Answer::Refused(m)) if m.contains("clone")));
}

#[test]
fn a_forced_reinitialize_cancels_the_running_job_first() {
    // Patroni's `reinitialize(force=True)`: a clone that hangs does not block the operator.
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = replica(Some(5002), 1);
    let mut o =
        Observation { request: Some(Request::Reinitialize { force: true, from_leader: true }), ..obs(0, &c, &l) };
    o.job = Some(JobState::Running(JobKind::Clone));
    let p = n.decide(&o);
    assert_eq!(p.actions, vec![Action::CancelJob, Action::StartJob(Job::Reinitialize(up("n2", 5002)))]);
    assert_eq!(p.answer, Some(Answer::Started));
    // Forced or not, the leader is not reinitialized and its job (a promotion, say) goes on.
    let mine = cluster(Some(ME));
    let mut o =
        Observation { request: Some(Request::Reinitialize { force: true, from_leader: false }), ..obs(0, &mine, &l) };
    o.job = Some(JobState::Running(JobKind::Promote));
    let p = n.decide(&o);
    assert!(!p.actions.contains(&Action::CancelJob), "{p:?}");
    assert!(matches!(p.answer, Some(Answer::Refused(_))), "{p:?}");
}

#[test]
fn cascading_replica_follows_its_replicatefrom_member_and_the_upstream_keeps_its_slot() {
    let mut s = settings();
    s.tags.replicatefrom = Some("n3".into());
    let mut n = HaNode::new(s);
    let mut c = cluster(Some("n2"));
    c.members[0].data.tags.replicatefrom = Some("n3".into());
    let l = replica(Some(5002), 1000);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![slots_for(false, &["n2", "n3"]), Action::Follow { upstream: Some(up("n3", 5003)) }]
    );

    let mut n3 = HaNode::new(NodeSettings { name: "n3".into(), ..settings() });
    let l3 = replica(Some(5002), 1000);
    // n1 streams through its slot here: that one is not idle.
    let mut want = slots_for(false, &["n1", "n2"]);
    if let Action::SyncSlots(t) = &mut want {
        t.idle.remove("n1");
    }
    assert_eq!(decide(&mut n3, &obs(0, &c, &l3)), vec![want]);
}

#[test]
fn streaming_from_a_member_that_is_itself_a_replica_does_not_block_the_race() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    // We stream from n2, which reports itself a replica: no live primary behind it.
    let l = replica(Some(5002), 1000);
    let peers = [peer("n2", 900, false)];
    let o = Observation { peers: Some(&peers), ..obs(0, &c, &l) };
    assert_eq!(decide(&mut n, &o), vec![Action::AcquireLeader]);
    // If n2 does not answer, its PostgreSQL may be a live primary whose agent died.
    let silent = [PeerReport { name: "n2".into(), status: None }];
    let o = Observation { peers: Some(&silent), ..obs(0, &c, &l) };
    assert!(decide(&mut n, &o).is_empty());
}

#[test]
fn a_vetoed_member_says_it_is_out_of_the_race() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = replica(None, 1000);
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Promote, Err("pre_promote exited with 1".into())));
    decide(&mut n, &o);
    assert!(n.race_backoff(Millis(1_000)));
    assert!(!n.race_backoff(Millis(31_000)));
}

#[test]
fn a_server_whose_data_directory_vanished_is_stopped_first() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = LocalPg { data: DataDir::Empty, process: replica(Some(5002), 1).process };
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::Stop(StopMode::Immediate)]);
    let broken = LocalPg { data: DataDir::Invalid("no pg_control".into()), process: primary().process };
    let mine = cluster(Some(ME));
    hold(&mut n);
    assert_eq!(decide(&mut n, &obs(0, &mine, &broken)), vec![Action::Stop(StopMode::Immediate), released(&broken)]);
}

#[test]
fn a_failed_replica_start_is_retried_after_a_loop_wait_not_at_once() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = stopped(ClusterState::ShutDownInRecovery, false);
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Start, Err("port in use".into())));
    let p = n.decide(&o);
    assert!(p.actions.is_empty());
    assert_eq!(p.next_cycle, Millis(10_000));
    assert!(decide(&mut n, &obs(5_000, &c, &l)).is_empty());
    assert!(matches!(&decide(&mut n, &obs(10_000, &c, &l))[..], [Action::StartJob(Job::Start(_))]));
}

#[test]
fn leader_keeps_a_cascading_members_slot_moved_to_where_that_member_is() {
    // Patroni 4 with member_slots_ttl > 0 (the default): every member has a slot on the leader,
    // so that a failover finds them all; the one a member streaming from another replica does
    // not use follows the position that member reports.
    let mut n = HaNode::new(settings());
    let mut c = cluster(Some(ME));
    c.members[2].data.tags.replicatefrom = Some("n2".into());
    c.members[2].data.xlog_location = Some(900);
    let t = slot_targets_of(&decide(&mut n, &obs(0, &c, &primary())));
    assert_eq!(t.wanted.keys().collect::<Vec<_>>(), ["n2", "n3"]);
    assert_eq!(t.positions, [("n3".to_string(), 900)].into_iter().collect());
}

#[test]
fn leader_without_member_slot_retention_keeps_no_slot_for_a_cascading_member() {
    let mut n = HaNode::new(settings());
    let mut c = with_member_slots_ttl(cluster(Some(ME)), serde_json::json!(0));
    c.members[2].data.tags.replicatefrom = Some("n2".into());
    let t = slot_targets_of(&decide(&mut n, &obs(0, &c, &primary())));
    assert_eq!(t.wanted.keys().collect::<Vec<_>>(), ["n2"]);
    // If n2 stops being a running replica, n3 falls back to the leader and needs its slot again.
    c.members[1].data.state = "stopped".into();
    let t = slot_targets_of(&decide(&mut n, &obs(0, &c, &primary())));
    assert_eq!(t.wanted.keys().collect::<Vec<_>>(), ["n2", "n3"]);
}

#[test]
fn no_slot_for_a_nostream_member_and_no_permanent_slot_on_a_member_that_never_leads() {
    let mut c = with_cdc_slot(cluster(Some("n2")), &[("cdc", 500)], &[]);
    c.members[2].data.tags.nostream = true;
    let t = slot_targets_of(&decide(&mut HaNode::new(settings()), &obs(0, &c, &replica(Some(5002), 1000))));
    assert!(t.wanted.contains_key("cdc") && !t.wanted.contains_key("n3"), "{t:?}");

    let mut s = settings();
    s.tags.nofailover = Some(true);
    let t = slot_targets_of(&decide(&mut HaNode::new(s), &obs(0, &c, &replica(Some(5002), 1000))));
    assert!(t.wanted.is_empty(), "a nofailover replica keeps only the slots of members streaming from it: {t:?}");

    // A nostream member keeps the permanent physical slots only.
    let mut s = settings();
    s.tags.nostream = true;
    let mut c = c.clone();
    c.config.as_mut().unwrap().slots = Some(
        serde_json::json!({"cdc": {"type": "logical", "database": "app", "plugin": "test_decoding"}, "keep": {"type": "physical"}}),
    );
    let t = slot_targets_of(&decide(&mut HaNode::new(s), &obs(0, &c, &replica(Some(5002), 1000))));
    assert!(t.wanted.contains_key("keep") && !t.wanted.contains_key("cdc"), "{t:?}");
}

#[test]
fn switchover_in_maintenance_mode_hands_over_and_the_old_leader_rejoins() {
    let mut n = HaNode::new(settings());
    let paused = |c: Cluster| Cluster { config: Some(DynamicConfig { pause: Some(true), ..Default::default() }), ..c };
    let c = paused(Cluster { failover: failover(Some(ME), Some("n2")), ..cluster(Some(ME)) });
    let peers = [peer("n2", 1000, false)];
    let running = primary();
    let o = Observation { peers: Some(&peers), ..obs(0, &c, &running) };
    assert_eq!(decide(&mut n, &o), vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
    let down = stopped(ClusterState::ShutDown, false);
    let caught_up = [peer("n2", 960, false)];
    let o = Observation { peers: Some(&caught_up), ..obs(100, &c, &down) };
    // It publishes the shutdown checkpoint as its last position.
    assert_eq!(decide(&mut n, &o), vec![Action::ReleaseLeader { last_position: Some(900) }]);
    let after = paused(cluster(Some("n2")));
    assert_eq!(
        decide(&mut n, &obs(200, &after, &down)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn members_cycle_fast_while_a_handover_is_under_way() {
    let mut n = HaNode::new(settings());
    let c = Cluster { failover: failover(Some("n2"), Some("n3")), ..cluster(Some("n2")) };
    let l = replica(Some(5002), 1000);
    assert_eq!(n.decide(&obs(0, &c, &l)).next_cycle, Millis(HANDOVER_CYCLE_MS));
    let quiet = cluster(Some("n2"));
    assert_eq!(n.decide(&obs(0, &quiet, &l)).next_cycle, Millis(10_000));
}

/// Proxy reports `(id, drain_timeout, drained)`.
fn proxies(list: &[(&str, Option<u64>, Option<&str>)]) -> BTreeMap<String, crate::model::ProxyReport> {
    list.iter()
        .map(|(id, t, d)| (id.to_string(), crate::model::ProxyReport { drain_timeout: *t, drained: d.map(Into::into) }))
        .collect()
}

fn stops(a: &[Action]) -> bool {
    a.contains(&Action::Stop(StopMode::Fast))
}

#[test]
fn switchover_waits_while_a_proxy_has_not_drained_and_stops_once_all_drained() {
    let mut n = HaNode::new(settings());
    let due = |p| Cluster { failover: failover(Some(ME), Some("n2")), proxies: p, ..cluster(Some(ME)) };
    let l = primary();
    let peers = [peer("n2", 1000, false)];
    // p2's report is left from a switchover of n3: it does not count as drained from us.
    let c = due(proxies(&[("p1", Some(10), Some(ME)), ("p2", Some(10), Some("n3"))]));
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    let quiet = Cluster { failover: None, ..c.clone() };
    let routine = decide(&mut HaNode::new(settings()), &Observation { peers: Some(&peers), ..obs(0, &quiet, &l) });
    assert_eq!(p.actions, routine, "still the primary: the routine work goes on, only the stop waits");
    assert!(p.message.contains("waiting for 1 proxy to finish their transactions on me (p2)"), "{}", p.message);
    assert!(p.next_cycle <= Millis(HANDOVER_CYCLE_MS), "looks again soon");
    // Still waiting: the bound counts from the first cycle, not this one.
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(9_000, &c, &l) });
    assert!(!stops(&p.actions) && p.message.contains("at most 1 s more"), "{}", p.message);
    let c = due(proxies(&[("p1", Some(10), Some(ME)), ("p2", Some(10), Some(ME))]));
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(9_500, &c, &l) });
    assert_eq!(p.actions, vec![Action::RenewLeader, Action::Stop(StopMode::Fast)], "{}", p.message);
    assert!(!p.message.contains("waiting"), "{}", p.message);
}

#[test]
fn switchover_stops_when_the_drain_bound_passed() {
    let mut n = HaNode::new(settings());
    let c = Cluster {
        failover: failover(Some(ME), Some("n2")),
        proxies: proxies(&[("p1", None, None), ("p2", Some(3), Some(ME))]),
        ..cluster(Some(ME))
    };
    let l = primary();
    let peers = [peer("n2", 1000, false)];
    let at = |t| Observation { peers: Some(&peers), ..obs(t, &c, &l) };
    assert!(!stops(&n.decide(&at(0)).actions));
    assert!(!stops(&n.decide(&at(drain::DEFAULT_DRAIN_TIMEOUT_S * 1000 - 1)).actions), "p1 gave no bound: 5 s");
    let p = n.decide(&at(drain::DEFAULT_DRAIN_TIMEOUT_S * 1000));
    assert_eq!(p.actions, vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
    assert!(
        p.message.contains("not waiting any longer (5 s) for 1 proxy") && p.message.contains("(p1)"),
        "{}",
        p.message
    );
}

#[test]
fn the_drain_wait_starts_afresh_for_a_new_switchover() {
    let mut n = HaNode::new(settings());
    let l = primary();
    let peers = [peer("n2", 1000, false)];
    let reports = proxies(&[("p1", Some(10), None)]);
    let due = Cluster { failover: failover(Some(ME), Some("n2")), proxies: reports.clone(), ..cluster(Some(ME)) };
    let cancelled = Cluster { proxies: reports, ..cluster(Some(ME)) };
    assert!(!stops(&decide(&mut n, &Observation { peers: Some(&peers), ..obs(0, &due, &l) })));
    decide(&mut n, &Observation { peers: Some(&peers), ..obs(1_000, &cancelled, &l) });
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(10_000, &due, &l) });
    assert!(!stops(&p.actions), "a new request waits its own bound: {}", p.message);
    assert!(p.message.contains("at most 10 s more"), "{}", p.message);
}

#[test]
fn without_proxies_or_when_forced_the_switchover_does_not_wait() {
    let l = primary();
    let peers = [peer("n2", 1000, false)];
    let plain = Cluster { failover: failover(Some(ME), Some("n2")), ..cluster(Some(ME)) };
    let o = Observation { peers: Some(&peers), ..obs(0, &plain, &l) };
    assert_eq!(decide(&mut HaNode::new(settings()), &o), vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
    let mut forced = Cluster { proxies: proxies(&[("p1", Some(30), None)]), ..plain };
    forced.failover.as_mut().unwrap().force = true;
    let o = Observation { peers: Some(&peers), ..obs(0, &forced, &l) };
    assert_eq!(decide(&mut HaNode::new(settings()), &o), vec![Action::RenewLeader, Action::Stop(StopMode::Fast)]);
}
