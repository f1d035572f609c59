//! Table tests of the decision, one scenario per test, named for the rule it checks.

use super::*;
use crate::lsn::Lsn;
use crate::model::{Leader, Member, MemberData, Status};
use crate::observe::{ClusterState, JobError, LocalPg, PeerReport, PeerStatus, WalPositions};

const ME: &str = "n1";

fn settings() -> NodeSettings {
    NodeSettings { name: ME.into(), bootstrap_dcs: DynamicConfig::default(), ..Default::default() }
}

fn member(name: &str, port: u16, role: &str) -> Member {
    Member {
        name: name.into(),
        data: MemberData {
            conn_url: format!("postgres://127.0.0.1:{port}/postgres"),
            api_url: format!("http://127.0.0.1:{}/patroni", port + 1000),
            state: "running".into(),
            role: role.into(),
            ..Default::default()
        },
        lease: 1,
    }
}

/// A three-member cluster with `leader` holding the lock (or nobody).
fn cluster(leader: Option<&str>) -> Cluster {
    let mut c = Cluster {
        initialize: Some("7000".into()),
        config: Some(DynamicConfig {
            postgresql: crate::dynamic::DynamicPostgresql { use_pg_rewind: true, ..Default::default() },
            ..Default::default()
        }),
        members: vec![member("n1", 5001, "replica"), member("n2", 5002, "replica"), member("n3", 5003, "replica")],
        status: Status { optime: 1000, ..Default::default() },
        ..Default::default()
    };
    if let Some(l) = leader {
        c.leader = Some(Leader { name: l.into(), lease: 1, mod_revision: 1 });
    }
    c
}

/// The cluster after a promotion: the leader published timeline 2.
fn promoted(mut c: Cluster) -> Cluster {
    let leader = c.leader.as_ref().unwrap().name.clone();
    c.members.iter_mut().filter(|m| m.name == leader).for_each(|m| m.data.timeline = Some(2));
    c
}

fn ctl(state: ClusterState) -> ControlData {
    ControlData {
        sysid: "7000".into(),
        state,
        timeline: 1,
        checkpoint_lsn: Lsn(900),
        min_recovery_timeline: 0,
        min_recovery_lsn: Lsn(0),
        hot_standby: Default::default(),
    }
}

fn primary() -> LocalPg {
    LocalPg {
        data: DataDir::Initialized(ctl(ClusterState::InProduction)),
        process: PgProcess::Running(RunningPg {
            in_recovery: false,
            timeline: 1,
            wal: WalPositions { flush: Some(Lsn(1000)), ..Default::default() },
            streaming: false,
            upstream: None,
            ..Default::default()
        }),
    }
}

fn replica(upstream_port: Option<u16>, wal: u64) -> LocalPg {
    LocalPg {
        data: DataDir::Initialized(ctl(ClusterState::InArchiveRecovery)),
        process: PgProcess::Running(RunningPg {
            in_recovery: true,
            timeline: 1,
            wal: WalPositions { received: Some(Lsn(wal)), replayed: Some(Lsn(wal)), ..Default::default() },
            streaming: upstream_port.is_some(),
            upstream: upstream_port.map(|p| ("127.0.0.1".to_string(), p)),
            ..Default::default()
        }),
    }
}

fn stopped(state: ClusterState, crashed: bool) -> LocalPg {
    LocalPg {
        data: DataDir::Initialized(ctl(state)),
        process: if crashed { PgProcess::Crashed } else { PgProcess::Stopped },
    }
}

fn empty() -> LocalPg {
    LocalPg { data: DataDir::Empty, process: PgProcess::Stopped }
}

fn obs<'a>(now: u64, c: &'a Cluster, local: &'a LocalPg) -> Observation<'a> {
    Observation {
        now: Millis(now),
        wall_clock_ms: 0,
        request: None,
        dcs: DcsView::Ok(c),
        local,
        job: None,
        peers: None,
        failsafe_round: None,
        failsafe_ping: None,
        watchdog_unusable: None,
    }
}

fn decide(node: &mut HaNode, o: &Observation<'_>) -> Vec<Action> {
    node.decide(o).actions
}

fn up(name: &str, port: u16) -> Upstream {
    Upstream { name: name.into(), host: "127.0.0.1".into(), port }
}

#[test]
fn first_node_races_for_initialize_then_bootstraps() {
    let mut n = HaNode::new(settings());
    let c = Cluster::default();
    let l = empty();
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::TryInitialize]);
    n.advance(ActionResult::InitializeRace { won: true });
    assert_eq!(decide(&mut n, &obs(1, &c, &l)), vec![Action::StartJob(Job::Bootstrap)]);
}

#[test]
fn losers_of_the_initialize_race_wait_for_the_leader() {
    let mut n = HaNode::new(settings());
    let c = Cluster { initialize: Some(String::new()), ..Default::default() };
    let l = empty();
    n.advance(ActionResult::InitializeRace { won: false });
    let p = n.decide(&obs(0, &c, &l));
    assert!(p.actions.is_empty());
    assert!(p.message.contains("waiting for the leader"), "{}", p.message);
}

#[test]
fn finished_bootstrap_records_sysid_then_takes_the_lock() {
    let mut n = HaNode::new(settings());
    let c = Cluster { initialize: Some(String::new()), ..Default::default() };
    let l = primary();
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Bootstrap, Ok(())));
    assert_eq!(decide(&mut n, &o), vec![Action::RecordInitialize { sysid: "7000".into() }, Action::AcquireLeader]);
}

#[test]
fn failed_bootstrap_is_cancelled() {
    let mut n = HaNode::new(settings());
    let c = Cluster { initialize: Some(String::new()), ..Default::default() };
    let l = empty();
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Bootstrap, Err("initdb failed".into())));
    assert_eq!(
        decide(&mut n, &o),
        vec![Action::CancelInitialize, Action::Fatal("Failed to bootstrap cluster".into())],
        "once, then the agent exits, as Patroni does"
    );
}

#[test]
fn empty_node_clones_from_the_leader_or_a_clonefrom_member() {
    let mut n = HaNode::new(settings());
    let mut c = cluster(Some("n2"));
    let l = empty();
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::StartJob(Job::Clone(Some(up("n2", 5002))))]);
    c.members[2].data.tags.clonefrom = true;
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::StartJob(Job::Clone(Some(up("n3", 5003))))]);
}

#[test]
fn with_no_leader_an_empty_node_restores_only_with_a_method_that_needs_no_leader() {
    // An initialized cluster whose leader is gone (its key expired or released).
    let c = Cluster { initialize: Some("7000".into()), ..cluster(None) };
    let l = empty();
    let mut plain = HaNode::new(settings());
    let p = plain.decide(&obs(0, &c, &l));
    assert!(p.actions.is_empty() && p.message == "waiting for the leader to bootstrap", "{p:?}");
    let mut restorer = HaNode::new(NodeSettings { clone_without_leader: true, ..settings() });
    let p = restorer.decide(&obs(0, &c, &l));
    assert_eq!(p.actions, vec![Action::StartJob(Job::Clone(None))]);
    assert!(p.message.contains("bootstrap (without leader)"), "{}", p.message);
    // Not next to another member's bootstrap in progress (initialize key still empty).
    let booting = Cluster { initialize: Some(String::new()), ..cluster(None) };
    assert!(decide(&mut restorer, &obs(1, &booting, &l)).is_empty());
    // With a leader, the leader is copied from as usual.
    assert_eq!(
        decide(&mut restorer, &obs(2, &cluster(Some("n2")), &l)),
        vec![Action::StartJob(Job::Clone(Some(up("n2", 5002))))]
    );
}

#[test]
fn leader_renews_publishes_status_and_keeps_slots_for_the_others() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(p.actions, vec![Action::RenewLeader, Action::WriteStatus, slots_for(true, &["n2", "n3"])]);
    assert!(p.message.contains("the leader with the lock"));
}

#[test]
fn leader_without_initialize_key_records_it() {
    let mut n = HaNode::new(settings());
    let mut c = cluster(Some(ME));
    c.initialize = None;
    let l = primary();
    assert!(decide(&mut n, &obs(0, &c, &l)).contains(&Action::RecordInitialize { sysid: "7000".into() }));
}

#[test]
fn leader_fences_itself_before_the_lease_can_expire() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    decide(&mut n, &obs(0, &c, &l));
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 30 });
    // ttl 30 s: the lock is ours until 30 s after the renewal was sent; fence 5 s earlier.
    assert_eq!(n.fence_deadline(), Some(Millis(25_000)));
    let down = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(10_000, &c, &l) };
    let p = n.decide(&down);
    assert!(p.actions.is_empty(), "still inside the lease: {p:?}");
    assert!(p.next_cycle <= Millis(11_000), "retries the DCS at least every second");
    let late = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(25_000, &c, &l) };
    assert_eq!(decide(&mut n, &late), vec![Action::Stop(StopMode::Immediate)]);
    assert_eq!(n.leader_until(), None);
}

#[test]
fn fence_deadline_follows_the_lease_ttl_not_the_configured_one() {
    let mut n = HaNode::new(settings());
    // The DCS config says ttl 30, but the lease the lock sits on was granted with 10 s.
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 10 });
    assert_eq!(n.fence_deadline(), Some(Millis(10_000 - fence_margin_ms(10))));
}

#[test]
fn fencing_wins_over_a_running_job() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 30 });
    let mut o = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(26_000, &c, &l) };
    o.job = Some(JobState::Running(JobKind::Promote));
    assert_eq!(decide(&mut n, &o), vec![Action::Stop(StopMode::Immediate)]);
}

#[test]
fn leader_next_cycle_never_later_than_fence_deadline() {
    let mut n = HaNode::new(NodeSettings {
        bootstrap_dcs: DynamicConfig { ttl: 10, loop_wait: 9, retry_timeout: 0, ..Default::default() },
        ..settings()
    });
    let c = Cluster { config: None, ..cluster(Some(ME)) };
    let l = primary();
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 10 });
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(p.next_cycle, Millis(10_000 - fence_margin_ms(10)));
}

#[test]
fn primary_without_confirmed_lock_stops_when_dcs_is_unreachable() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = primary();
    let o = Observation { dcs: DcsView::Unavailable("connection refused".into()), ..obs(0, &c, &l) };
    assert_eq!(decide(&mut n, &o), vec![Action::Stop(StopMode::Immediate)]);
}

#[test]
fn replica_does_nothing_when_dcs_is_unreachable() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = replica(Some(5002), 1000);
    let o = Observation { dcs: DcsView::Unavailable("connection refused".into()), ..obs(0, &c, &l) };
    assert!(decide(&mut n, &o).is_empty());
}

#[test]
fn primary_demotes_when_someone_else_holds_the_lock() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = primary();
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::Stop(StopMode::Immediate)]);
}

#[test]
fn failed_renewal_drops_the_belief_in_leadership() {
    let mut n = HaNode::new(settings());
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 30 });
    assert_eq!(n.believed(Millis(1)), Believed::Leader);
    n.advance(ActionResult::Leader { held: false, sent_at: Millis(5), ttl_secs: 30 });
    assert_eq!(n.believed(Millis(6)), Believed::NotLeader);
    assert_eq!(n.fence_deadline(), None);
}

#[test]
fn replica_follows_the_current_leader() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n3"));
    let l = replica(Some(5002), 1000);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![slots_for(false, &["n2", "n3"]), Action::Follow { upstream: Some(up("n3", 5003)) }]
    );
    let ok = replica(Some(5003), 1000);
    let p = n.decide(&obs(0, &c, &ok));
    assert_eq!(p.actions, vec![slots_for(false, &["n2", "n3"])], "a replica keeps the others' slots too");
    assert!(p.message.contains("following a leader (n3)"));
}

#[test]
fn replica_holding_the_lock_promotes() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = replica(None, 1000);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![Action::RenewLeader, slots_before_promotion(&["n2", "n3"]), Action::StartJob(Job::Promote)]
    );
}

/// The slot sync of a member that holds the lock but is still in recovery: replica-style, and
/// no slot is judged idle yet (Patroni's `clean_inactive_physical_slots` is off then).
fn slots_before_promotion(members: &[&str]) -> Action {
    let mut a = slots_for(false, members);
    if let Action::SyncSlots(t) = &mut a {
        t.idle.clear();
    }
    a
}

fn peer(name: &str, wal: u64, primary: bool) -> PeerReport {
    PeerReport {
        name: name.into(),
        status: Some(PeerStatus { is_primary: primary, wal: Lsn(wal), timeline: 1, can_fail_over: true, priority: 1 }),
    }
}

#[test]
fn healthiest_replica_races_when_there_is_no_leader() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = replica(None, 1000);
    let peers = [peer("n3", 990, false), PeerReport { name: "n2".into(), status: None }];
    let o = Observation { peers: Some(&peers), ..obs(0, &c, &l) };
    assert_eq!(decide(&mut n, &o), vec![Action::AcquireLeader]);
}

#[test]
fn a_required_watchdog_that_cannot_be_armed_keeps_a_member_from_leading() {
    let no_dev = Some("opening /dev/watchdog: No such file or directory");
    // The healthiest replica does not take the free lock.
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = replica(None, 1000);
    let peers = [peer("n3", 990, false)];
    let p = n.decide(&Observation { peers: Some(&peers), watchdog_unusable: no_dev, ..obs(0, &c, &l) });
    assert_eq!(p.actions, vec![]);
    assert!(p.message.contains("watchdog is required but cannot be used (opening /dev/watchdog"), "{}", p.message);
    // A first member does not bootstrap a cluster.
    let mut n = HaNode::new(settings());
    let (c, l) = (Cluster::default(), empty());
    assert_eq!(n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &c, &l) }).actions, vec![]);
    // A replica holding the lock releases it rather than promote, and keeps out of the race a ttl.
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = replica(None, 1000);
    assert_eq!(
        n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &c, &l) }).actions,
        vec![Action::ReleaseLeader]
    );
    assert!(n.race_backoff(Millis(1)));
    // A leader running a primary whose watchdog can no longer be armed demotes.
    let mut n = HaNode::new(settings());
    let l = primary();
    assert_eq!(
        n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &c, &l) }).actions,
        vec![Action::Stop(StopMode::Immediate), Action::ReleaseLeader]
    );
    // In maintenance mode the rule is off, as in Patroni.
    let mut n = HaNode::new(settings());
    let mut paused = cluster(Some(ME));
    paused.config.as_mut().unwrap().pause = Some(true);
    let p = n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &paused, &l) });
    assert!(!p.actions.contains(&Action::ReleaseLeader), "{:?}", p.actions);
}

#[test]
fn replica_still_streaming_from_a_live_primary_does_not_race() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = replica(Some(5002), 1000);
    let p = n.decide(&obs(0, &c, &l));
    assert!(p.actions.is_empty());
    assert!(p.message.contains("still streaming"), "{}", p.message);
}

#[test]
fn a_stream_silent_for_half_the_ttl_does_not_hold_the_race() {
    // Behind a partition the connection stays `streaming` in PostgreSQL's eyes, but nothing
    // arrives: after half the ttl (30 s here) of silence it proves nothing any more.
    let c = cluster(None);
    let mut l = replica(Some(5002), 1000);
    let silent = |l: &mut LocalPg, ms: u64| {
        if let PgProcess::Running(r) = &mut l.process {
            r.upstream_silent_ms = Some(ms);
        }
    };
    silent(&mut l, 800);
    let p = HaNode::new(settings()).decide(&obs(0, &c, &l));
    assert!(p.actions.is_empty() && p.message.contains("still streaming"), "{p:?}");
    silent(&mut l, 16_000);
    let p = HaNode::new(settings()).decide(&obs(0, &c, &l));
    assert_eq!(p.actions, vec![Action::AcquireLeader], "{}", p.message);
}

#[test]
fn lagging_replica_does_not_race() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = replica(None, 990);
    let peers = [peer("n3", 1000, false)];
    let o = Observation { peers: Some(&peers), ..obs(0, &c, &l) };
    let p = n.decide(&o);
    assert!(p.actions.is_empty());
    assert!(p.message.contains("n3 is ahead"), "{}", p.message);
}

#[test]
fn nofailover_member_never_races() {
    let mut s = settings();
    s.tags.nofailover = Some(true);
    let mut n = HaNode::new(s);
    let c = cluster(None);
    let l = replica(None, 1000);
    assert!(decide(&mut n, &obs(0, &c, &l)).is_empty());
}

#[test]
fn a_leader_whose_data_directory_is_a_replicas_starts_read_only_to_be_promoted() {
    // It won the race and died before its promotion: the lock is still its own when it returns.
    let c = cluster(Some(ME));
    for state in [ClusterState::InArchiveRecovery, ClusterState::ShutDownInRecovery] {
        let l = stopped(state, true);
        let p = HaNode::new(settings()).decide(&obs(0, &c, &l));
        assert_eq!(
            p.actions,
            vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
            "{state:?}: {}",
            p.message
        );
    }
}

#[test]
fn crashed_leader_restarts_in_place_then_hands_over_if_that_fails() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = stopped(ClusterState::InProduction, true);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::Primary))]
    );
    let mut o = obs(1000, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Start, Err("postmaster exited".into())));
    // Patroni's callback for it: on_role_change demoted.
    assert_eq!(decide(&mut n, &o), vec![Action::ReleaseLeader, Action::RoleChangeCallback("demoted".into())]);
}

#[test]
fn primary_start_timeout_0_fails_over_at_once_when_a_replica_can_take_over() {
    let zero = |c: Cluster| Cluster {
        config: Some(DynamicConfig { primary_start_timeout: Some(0), ..Default::default() }),
        ..c
    };
    let l = stopped(ClusterState::InProduction, true);
    let mut n = HaNode::new(settings());
    let p = n.decide(&obs(0, &zero(cluster(Some(ME))), &l));
    assert_eq!(p.actions, vec![Action::ReleaseLeader]);
    assert!(p.message.contains("Primary crashed. Failing over."), "{}", p.message);

    // Nobody to take over (the others are nofailover or down): restart in place after all.
    let mut c = zero(cluster(Some(ME)));
    for m in c.members.iter_mut().filter(|m| m.name != ME) {
        m.data.tags.nofailover = Some(true);
    }
    let mut n = HaNode::new(settings());
    assert!(decide(&mut n, &obs(0, &c, &l)).contains(&Action::StartJob(Job::Start(StartRole::Primary))));
}

#[test]
fn crashed_leader_gives_up_after_primary_start_timeout() {
    let mut n = HaNode::new(settings());
    let c = Cluster {
        config: Some(DynamicConfig { primary_start_timeout: Some(5), ..Default::default() }),
        ..cluster(Some(ME))
    };
    let l = stopped(ClusterState::InProduction, true);
    assert!(decide(&mut n, &obs(0, &c, &l)).contains(&Action::StartJob(Job::Start(StartRole::Primary))));
    assert_eq!(
        decide(&mut n, &obs(6_000, &c, &l)),
        vec![Action::ReleaseLeader, Action::RoleChangeCallback("demoted".into())]
    );
}

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
fn fresh_clone_starts_as_replica_although_its_control_file_says_primary() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = stopped(ClusterState::InProduction, false);
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Finished(JobKind::Clone, Ok(())));
    assert_eq!(
        decide(&mut n, &o),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn former_primary_on_the_leaders_timeline_is_not_rewound() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = stopped(ClusterState::InProduction, false);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn former_replica_just_starts_following() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = stopped(ClusterState::ShutDownInRecovery, false);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: Some(up("n2", 5002)) }))]
    );
}

#[test]
fn without_leader_a_stopped_node_starts_read_only() {
    let mut n = HaNode::new(settings());
    let c = cluster(None);
    let l = stopped(ClusterState::InProduction, false);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))]
    );
}

#[test]
fn leader_keeps_renewing_during_a_job() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = LocalPg { data: DataDir::Initialized(ctl(ClusterState::InProduction)), process: PgProcess::Starting };
    let mut o = obs(0, &c, &l);
    o.job = Some(JobState::Running(JobKind::Start));
    assert_eq!(decide(&mut n, &o), vec![Action::RenewLeader]);
}

#[test]
fn system_identifier_mismatch_is_fatal() {
    let mut n = HaNode::new(settings());
    let c = Cluster { initialize: Some("9999".into()), ..cluster(Some("n2")) };
    let l = replica(Some(5002), 1);
    let a = decide(&mut n, &obs(0, &c, &l));
    assert!(matches!(&a[..], [Action::Fatal(m)] if m.contains("9999") && m.contains("7000")), "{a:?}");
}

/// This process acquired (or renewed) the lock at time 0.
fn hold(n: &mut HaNode) {
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 30 });
}

#[test]
fn an_agent_never_releases_a_lock_it_does_not_hold() {
    // A second agent started with the live leader's name: the key names "us", but this process
    // never acquired nor renewed it. Neither an empty data directory, nor an unusable one, nor a
    // shutdown makes it delete the key (that would fail over the live leader), and it does not
    // clone from the member of its own name either.
    let c = cluster(Some(ME));
    for local in [empty(), LocalPg { data: DataDir::Invalid("no pg_control".into()), process: PgProcess::Stopped }] {
        let mut n = HaNode::new(settings());
        let p = n.decide(&obs(0, &c, &local));
        assert!(p.actions.is_empty(), "{p:?}");
        assert!(!n.decide_shutdown(&obs(1, &c, &local)).actions.contains(&Action::ReleaseLeader));
    }
    let mut n = HaNode::new(settings());
    let p = n.decide(&obs(0, &c, &empty()));
    assert!(p.message.contains("does not hold the lock"), "{}", p.message);
    // The agent that did take it releases it when its data directory is emptied under it.
    hold(&mut n);
    assert_eq!(decide(&mut n, &obs(1, &c, &empty())), vec![Action::ReleaseLeader]);
}

#[test]
fn shutdown_stops_postgres_before_releasing_the_lock() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    hold(&mut n);
    assert_eq!(n.decide_shutdown(&obs(0, &c, &l)).actions, vec![Action::Stop(StopMode::Fast), Action::ReleaseLeader]);
    let r = replica(Some(5002), 1);
    let c2 = cluster(Some("n2"));
    let plan = n.decide_shutdown(&obs(0, &c2, &r));
    assert_eq!(plan.actions, vec![Action::Stop(StopMode::Fast)]);
    assert_eq!(plan.message, "shutting down: stopping PostgreSQL", "the log line says what happens");
}

#[test]
fn pause_blocks_automatic_actions() {
    let mut n = HaNode::new(settings());
    let paused = |leader: Option<&str>| Cluster {
        config: Some(DynamicConfig { pause: Some(true), ..Default::default() }),
        ..cluster(leader)
    };
    let c = paused(None);
    let l = replica(None, 1000);
    assert!(decide(&mut n, &obs(0, &c, &l)).is_empty(), "no race");
    let c = paused(Some(ME));
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![Action::RenewLeader], "no promotion");
    let s = stopped(ClusterState::ShutDown, false);
    let c = paused(Some("n2"));
    assert!(decide(&mut n, &obs(0, &c, &s)).is_empty(), "no start");
    // A leader whose PostgreSQL went down gives the lock up (Patroni's rule), and does not start it.
    let mut leader = HaNode::new(settings());
    let c = paused(Some(ME));
    decide(&mut leader, &obs(0, &c, &primary()));
    leader.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 30 });
    let p = leader.decide(&obs(1_000, &c, &stopped(ClusterState::InProduction, true)));
    assert_eq!(p.actions, vec![Action::ReleaseLeader]);
    assert_eq!(p.message, "PAUSE: removed leader lock because postgres is not running");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_local() -> impl Strategy<Value = LocalPg> {
        prop_oneof![
            Just(primary()),
            (proptest::option::of(5001u16..5004), 900u64..1100).prop_map(|(u, w)| replica(u, w)),
            Just(stopped(ClusterState::InProduction, true)),
            Just(stopped(ClusterState::ShutDownInRecovery, false)),
            Just(empty()),
        ]
    }

    fn any_leader() -> impl Strategy<Value = Option<&'static str>> {
        prop_oneof![Just(None), Just(Some("n1")), Just(Some("n2")), Just(Some("n3"))]
    }

    proptest! {
        /// The core never asks to start or promote a primary unless the snapshot shows it as
        /// the lock holder, whatever happened before.
        #[test]
        fn never_primary_without_the_lock(
            steps in proptest::collection::vec((any_leader(), any_local(), any::<bool>(), any::<bool>()), 1..40)
        ) {
            let mut n = HaNode::new(settings());
            let mut now = 0u64;
            for (leader, local, dcs_ok, renew_ok) in steps {
                now += 3_000;
                let c = cluster(leader);
                let o = Observation {
                    dcs: if dcs_ok { DcsView::Ok(&c) } else { DcsView::Unavailable("x".into()) },
                    ..obs(now, &c, &local)
                };
                let plan = n.decide(&o);
                for a in &plan.actions {
                    let promotes = matches!(a, Action::StartJob(Job::Promote) | Action::StartJob(Job::Start(StartRole::Primary)));
                    if promotes {
                        prop_assert!(dcs_ok && leader == Some(ME), "{a:?} while leader={leader:?} dcs_ok={dcs_ok}");
                    }
                    if matches!(a, Action::RenewLeader | Action::AcquireLeader) {
                        n.advance(ActionResult::Leader { held: renew_ok, sent_at: Millis(now), ttl_secs: 30 });
                    }
                }
            }
        }

        /// Once the fence deadline has passed, a live PostgreSQL on a node that believed it was
        /// leader is stopped at once, whatever the DCS says.
        #[test]
        fn fence_deadline_is_honoured(renewed_at in 0u64..100_000, late in 0u64..60_000, dcs_ok in any::<bool>()) {
            let mut n = HaNode::new(settings());
            n.advance(ActionResult::Leader { held: true, sent_at: Millis(renewed_at), ttl_secs: 30 });
            let deadline = n.fence_deadline().unwrap();
            let c = cluster(Some(ME));
            let l = primary();
            let now = deadline.0 + late;
            let o = Observation {
                dcs: if dcs_ok { DcsView::Ok(&c) } else { DcsView::Unavailable("x".into()) },
                ..obs(now, &c, &l)
            };
            let plan = n.decide(&o);
            prop_assert_eq!(plan.actions.first(), Some(&Action::Stop(StopMode::Immediate)));
        }
    }
}

// ----- switchover, failover and operator requests -----

use crate::model::Failover;

fn failover(leader: Option<&str>, member: Option<&str>) -> Option<Failover> {
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
    assert_eq!(decide(&mut n, &o), vec![Action::ReleaseLeader]);
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
    assert_eq!(decide(&mut n, &o), vec![Action::ReleaseLeader]);
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
    assert_eq!(decide(&mut n, &obs(0, &mine, &broken)), vec![Action::Stop(StopMode::Immediate), Action::ReleaseLeader]);
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
    assert_eq!(decide(&mut n, &o), vec![Action::ReleaseLeader]);
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

// ----- synchronous replication -----

use crate::model::SyncState;
use crate::observe::Walsender;
use crate::SyncMode;

/// `cluster(leader)` in synchronous `mode`, with the `sync` key written by `key_leader` listing
/// `voters` with `quorum`.
fn sync_cluster(leader: Option<&str>, mode: SyncMode, key_leader: &str, voters: &[&str], quorum: usize) -> Cluster {
    let mut c = cluster(leader);
    c.config.as_mut().unwrap().synchronous_mode = Some(mode);
    let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
    c.sync = Some(SyncState::new(key_leader, &v, quorum));
    c.sync_revision = 11;
    c
}

fn running(l: &LocalPg) -> &RunningPg {
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
    assert_eq!(
        decide(&mut n, &Observation { peers: Some(&caught_up), ..obs(100, &c, &down) }),
        vec![Action::ReleaseLeader]
    );
}

/// The slot sync of a member whose wanted slots are the physical slots of `members` (no
/// permanent slots, nothing published yet).
/// The slots wanted for `members`; as primary of [`cluster`] it publishes the slot names of all
/// three members in `retain_slots`; as a replica nobody streams from, all of them are idle.
fn slots_for(primary: bool, members: &[&str]) -> Action {
    Action::SyncSlots(crate::slots::SlotTargets {
        primary,
        wanted: members.iter().map(|m| (m.to_string(), crate::slots::SlotKind::Physical)).collect(),
        retain: if primary { vec!["n1".into(), "n2".into(), "n3".into()] } else { vec![] },
        idle: if primary { Default::default() } else { members.iter().map(|m| m.to_string()).collect() },
        ..Default::default()
    })
}

/// `cluster` with a permanent logical slot `cdc` configured and the leader's published slots.
fn with_cdc_slot(mut c: Cluster, published: &[(&str, u64)], retain: &[&str]) -> Cluster {
    let cfg = c.config.as_mut().unwrap();
    cfg.slots = Some(serde_json::json!({"cdc": {"type": "logical", "database": "app", "plugin": "test_decoding"}}));
    c.status.slots = published.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    c.status.retain_slots = retain.iter().map(|s| s.to_string()).collect();
    c
}

#[test]
fn permanent_slots_are_wanted_everywhere_and_replicas_get_the_leaders_positions() {
    let cdc = crate::slots::SlotKind::Logical { database: "app".into(), plugin: "test_decoding".into() };
    let c = with_cdc_slot(cluster(Some(ME)), &[], &[]);
    let a = decide(&mut HaNode::new(settings()), &obs(0, &c, &primary()));
    let Some(Action::SyncSlots(t)) = a.iter().find(|a| matches!(a, Action::SyncSlots(_))) else { panic!("{a:?}") };
    assert!(t.primary);
    assert_eq!(t.wanted.get("cdc"), Some(&cdc));
    assert!(t.wanted.contains_key("n2") && !t.wanted.contains_key("n1"), "no slot for itself");

    let c = with_cdc_slot(cluster(Some("n2")), &[("cdc", 900), ("n2", 1000)], &["n1", "n2", "n3", "gone"]);
    let a = decide(&mut HaNode::new(settings()), &obs(0, &c, &replica(Some(5002), 1000)));
    let Some(Action::SyncSlots(t)) = a.first() else { panic!("{a:?}") };
    assert!(!t.primary);
    assert_eq!(t.positions.get("cdc"), Some(&900));
    assert!(t.wanted.contains_key("n2") && t.wanted.contains_key("n3"), "the leader's and the other replica's");
    assert!(t.managed.contains("gone"), "what the leader published may be dropped once unwanted");
}

#[test]
fn an_unreadable_slots_configuration_drops_nothing() {
    let mut c = with_cdc_slot(cluster(Some(ME)), &[("cdc", 5)], &["n2"]);
    c.config.as_mut().unwrap().slots = Some(serde_json::json!({"cdc": {"type": "logical"}}));
    let a = decide(&mut HaNode::new(settings()), &obs(0, &c, &primary()));
    let Some(Action::SyncSlots(t)) = a.iter().find(|a| matches!(a, Action::SyncSlots(_))) else { panic!("{a:?}") };
    assert!(t.managed.is_empty(), "cdc must not look unwanted because its definition is broken");
}

#[test]
fn replica_restarts_to_copy_missing_logical_slots_at_most_once_a_minute_per_slot() {
    let c = with_cdc_slot(cluster(Some("n2")), &[("cdc", 900)], &[]);
    let l = replica(Some(5002), 1000);
    let mut n = HaNode::new(settings());
    n.advance(ActionResult::LogicalSlotsMissing(vec!["cdc".into()]));
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(
        p.actions,
        vec![Action::StartJob(Job::CopyLogicalSlots {
            from: up("n2", 5002),
            upstream: up("n2", 5002),
            slots: vec!["cdc".into()]
        })]
    );
    assert!(p.message.contains("copy logical slots [cdc]"), "{}", p.message);

    // The copy failed and the slot is still missing: no second restart within the minute.
    n.advance(ActionResult::LogicalSlotsMissing(vec!["cdc".into()]));
    assert!(!decide(&mut n, &obs(30_000, &c, &l)).iter().any(|a| matches!(a, Action::StartJob(_))));
    // A slot configured since then is copied at once (with the other one).
    n.advance(ActionResult::LogicalSlotsMissing(vec!["cdc".into(), "cdc2".into()]));
    assert_eq!(
        decide(&mut n, &obs(31_000, &c, &l)),
        vec![Action::StartJob(Job::CopyLogicalSlots {
            from: up("n2", 5002),
            upstream: up("n2", 5002),
            slots: vec!["cdc".into(), "cdc2".into()]
        })]
    );
    n.advance(ActionResult::LogicalSlotsMissing(vec!["cdc".into()]));
    assert!(!decide(&mut n, &obs(61_000, &c, &l)).iter().any(|a| matches!(a, Action::StartJob(_))));
    assert!(matches!(&decide(&mut n, &obs(91_001, &c, &l))[..], [Action::StartJob(Job::CopyLogicalSlots { .. })]));
}

#[test]
fn a_cascading_replica_copies_logical_slots_from_the_leader_and_keeps_its_upstream() {
    let mut c = with_cdc_slot(cluster(Some("n2")), &[("cdc", 900)], &[]);
    let mut s = settings();
    s.tags.replicatefrom = Some("n3".into());
    c.members.iter_mut().find(|m| m.name == ME).unwrap().data.tags.replicatefrom = Some("n3".into());
    let mut n = HaNode::new(s);
    n.advance(ActionResult::LogicalSlotsMissing(vec!["cdc".into()]));
    assert_eq!(
        decide(&mut n, &obs(0, &c, &replica(Some(5003), 1000))),
        vec![Action::StartJob(Job::CopyLogicalSlots {
            from: up("n2", 5002),
            upstream: up("n3", 5003),
            slots: vec!["cdc".into()]
        })]
    );
}

#[test]
fn no_slot_copy_restart_in_maintenance_mode_or_before_following_the_upstream() {
    let mut c = with_cdc_slot(cluster(Some("n2")), &[("cdc", 900)], &[]);
    let mut n = HaNode::new(settings());
    n.advance(ActionResult::LogicalSlotsMissing(vec!["cdc".into()]));
    let a = decide(&mut n, &obs(0, &c, &replica(Some(5003), 1000)));
    assert!(a.contains(&Action::Follow { upstream: Some(up("n2", 5002)) }), "follow first: {a:?}");
    c.config.as_mut().unwrap().pause = Some(true);
    let a = decide(&mut n, &obs(0, &c, &replica(Some(5002), 1000)));
    assert!(!a.iter().any(|a| matches!(a, Action::StartJob(_))), "{a:?}");
}

#[test]
fn idle_physical_slots_are_those_nobody_streams_through_here() {
    // Replica n1 of leader n2; n3 cascades from n1; a permanent physical slot "perm".
    let mut c = cluster(Some("n2"));
    c.config.as_mut().unwrap().slots = Some(serde_json::json!({"perm": 0}));
    c.members.iter_mut().find(|m| m.name == "n3").unwrap().data.tags.replicatefrom = Some(ME.into());
    let t = slot_targets_of(&decide(&mut HaNode::new(settings()), &obs(0, &c, &replica(Some(5002), 1000))));
    assert_eq!(t.idle, ["n2".to_string(), "perm".to_string()].into(), "n3 streams through here");
    // As leader: only the slot of a member cascading from another member is idle.
    let mut c = cluster(Some(ME));
    c.config.as_mut().unwrap().slots = Some(serde_json::json!({"perm": 0}));
    c.members.iter_mut().find(|m| m.name == "n3").unwrap().data.tags.replicatefrom = Some("n2".into());
    let t = slot_targets_of(&decide(&mut HaNode::new(settings()), &obs(0, &c, &primary())));
    assert_eq!(t.idle, ["n3".to_string()].into());
}

/// The slot targets of the cycle's sync-slots action.
fn slot_targets_of(actions: &[Action]) -> crate::slots::SlotTargets {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SyncSlots(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no slot sync in {actions:?}"))
}

fn with_member_slots_ttl(mut c: Cluster, ttl: serde_json::Value) -> Cluster {
    c.config.as_mut().unwrap().extra.insert("member_slots_ttl".into(), ttl);
    c
}

#[test]
fn the_slot_of_a_member_that_left_is_kept_for_member_slots_ttl() {
    let mut n = HaNode::new(settings());
    let c = with_member_slots_ttl(cluster(Some(ME)), serde_json::json!("1min"));
    let t = slot_targets_of(&decide(&mut n, &obs(0, &c, &primary())));
    assert_eq!(t.retain, ["n1", "n2", "n3"]);
    // n3, last seen at 0 ms, is gone from the next cycle on: its slot stays wanted, and
    // published, until a minute after it was last seen.
    let mut gone = c.clone();
    gone.members.retain(|m| m.name != "n3");
    for at in [10_000, 59_999] {
        let t = slot_targets_of(&decide(&mut n, &obs(at, &gone, &primary())));
        assert!(t.wanted.contains_key("n3"), "at {at} ms: {t:?}");
        assert_eq!(t.retain, ["n1", "n2", "n3"], "at {at} ms");
    }
    let t = slot_targets_of(&decide(&mut n, &obs(60_000, &gone, &primary())));
    assert!(!t.wanted.contains_key("n3") && t.retain == ["n1", "n2"], "expired: {t:?}");
    // A replica keeps what the leader retains, so whoever leads next has the slot too.
    let mut r = HaNode::new(NodeSettings { name: "n2".into(), ..settings() });
    let mut published = gone.clone();
    published.status.retain_slots = vec!["n1".into(), "n2".into(), "n3".into()];
    let t = slot_targets_of(&decide(&mut r, &obs(0, &published, &replica(Some(5001), 900))));
    assert!(t.wanted.contains_key("n3") && !t.wanted.contains_key("n2"), "{t:?}");
}

#[test]
fn a_new_leader_keeps_the_retained_slots_a_full_member_slots_ttl() {
    // The previous leader published n9, a member gone for a while; this node now leads.
    let mut n = HaNode::new(settings());
    let mut c = with_member_slots_ttl(cluster(Some(ME)), serde_json::json!(60));
    c.status.retain_slots = vec!["n1".into(), "n2".into(), "n3".into(), "n9".into()];
    let t = slot_targets_of(&decide(&mut n, &obs(500_000, &c, &primary())));
    assert!(t.wanted.contains_key("n9") && t.retain.contains(&"n9".to_string()), "{t:?}");
    let t = slot_targets_of(&decide(&mut n, &obs(559_999, &c, &primary())));
    assert!(t.wanted.contains_key("n9"), "{t:?}");
    let t = slot_targets_of(&decide(&mut n, &obs(560_000, &c, &primary())));
    assert!(!t.wanted.contains_key("n9") && !t.retain.contains(&"n9".to_string()), "{t:?}");
}

#[test]
fn member_slots_ttl_0_drops_a_departed_members_slot_at_once() {
    let mut n = HaNode::new(settings());
    let mut c = with_member_slots_ttl(cluster(Some(ME)), serde_json::json!(0));
    decide(&mut n, &obs(0, &c, &primary()));
    c.members.retain(|m| m.name != "n3");
    let t = slot_targets_of(&decide(&mut n, &obs(1, &c, &primary())));
    assert!(!t.wanted.contains_key("n3") && t.retain == ["n1", "n2"], "{t:?}");
}

// ----- hot-standby settings -----

/// A replica running `max_connections = running` whose control file asks for `needed`, with
/// replay in pause state `pause`.
fn replica_below_control(running: i64, needed: i64, pause: crate::hot_standby::ReplayPause) -> LocalPg {
    use crate::hot_standby::{Setting, Values};
    let mut l = replica(Some(5003), 1000);
    if let DataDir::Initialized(c) = &mut l.data {
        c.hot_standby = Values::from_pairs([(Setting::MaxConnections, needed)]);
    }
    if let PgProcess::Running(r) = &mut l.process {
        r.hot_standby = Values::from_pairs([(Setting::MaxConnections, running)]);
        r.replay_pause = pause;
    }
    l
}

#[test]
fn a_replica_paused_for_insufficient_settings_is_restarted_with_enough() {
    use crate::hot_standby::ReplayPause;
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n3"));
    let l = replica_below_control(100, 150, ReplayPause::Paused);
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(p.actions, vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: Some(up("n3", 5003)) }))]);
    assert!(p.message.contains("max_connections = 100 below the primary's 150"), "{}", p.message);
    // An operator's pause (settings sufficient) is left alone.
    let l = replica_below_control(150, 150, ReplayPause::Paused);
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), vec![slots_for(false, &["n2", "n3"])]);
}

#[test]
fn a_replica_paused_for_insufficient_settings_is_not_restarted_in_maintenance_mode() {
    use crate::hot_standby::ReplayPause;
    let mut n = HaNode::new(settings());
    let mut c = cluster(Some("n3"));
    c.config.as_mut().unwrap().pause = Some(true);
    let l = replica_below_control(100, 150, ReplayPause::Paused);
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(p.actions, vec![]);
    assert!(p.message.starts_with("PAUSE: recovery paused for insufficient parameter settings"), "{}", p.message);
}

#[test]
fn a_replica_paused_for_insufficient_settings_neither_races_nor_takes_a_requested_lock() {
    use crate::hot_standby::ReplayPause;
    let mut n = HaNode::new(settings());
    let restart = vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: None }))];
    let mut l = replica_below_control(100, 150, ReplayPause::Paused);
    if let PgProcess::Running(r) = &mut l.process {
        r.streaming = false;
    }
    let c = cluster(None);
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(p.actions, restart, "healthiest by position, but cannot be promoted: {}", p.message);
    let c = Cluster { failover: failover(Some("n3"), Some(ME)), ..cluster(None) };
    assert_eq!(decide(&mut n, &obs(0, &c, &l)), restart, "the requested candidate does not take the lock either");
}

#[test]
fn a_lock_holder_paused_for_insufficient_settings_restarts_before_promoting() {
    use crate::hot_standby::ReplayPause;
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = replica_below_control(100, 150, ReplayPause::Paused);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
        vec![Action::RenewLeader, Action::StartJob(Job::Restart(StartRole::Replica { upstream: None }))]
    );
}

/// `cluster` with `standby_cluster` in its dynamic configuration.
fn with_standby_cluster(mut c: Cluster) -> Cluster {
    let cfg = c.config.get_or_insert_with(DynamicConfig::default);
    cfg.extra.insert("standby_cluster".into(), serde_json::json!({"host": "10.0.0.9", "port": 5432}));
    c
}

#[test]
fn standby_cluster_in_the_dcs_keeps_every_member_from_taking_the_lock_or_promoting() {
    // The healthiest replica of a leaderless cluster does not race; it stays a replica.
    let mut n = HaNode::new(settings());
    let c = with_standby_cluster(cluster(None));
    let l = replica(None, 1000);
    let peers = [peer("n2", 990, false), peer("n3", 990, false)];
    let p = n.decide(&Observation { peers: Some(&peers), ..obs(0, &c, &l) });
    assert!(!p.actions.contains(&Action::AcquireLeader), "{p:?}");
    assert!(p.message.contains("standby_cluster is set"), "{}", p.message);
    // Nor does a first member bootstrap a cluster whose pre-written config carries it.
    let mut n = HaNode::new(settings());
    let fresh = with_standby_cluster(Cluster::default());
    assert_eq!(decide(&mut n, &obs(0, &fresh, &empty())), vec![]);
    // A member holding the lock with a replica's data directory is not promoted.
    let mut n = HaNode::new(settings());
    let mine = with_standby_cluster(cluster(Some(ME)));
    let a = decide(&mut n, &obs(0, &mine, &replica(None, 1000)));
    assert!(!a.contains(&Action::StartJob(Job::Promote)), "{a:?}");
    // A leader already running a primary keeps its lock: no demotion, no failover.
    let mut n = HaNode::new(settings());
    assert!(decide(&mut n, &obs(0, &mine, &primary())).contains(&Action::RenewLeader));
}

#[test]
fn a_nostream_member_streams_from_nobody_and_no_member_keeps_a_slot_for_it() {
    let nostream = || {
        let mut s = settings();
        s.tags.nostream = true;
        HaNode::new(s)
    };
    // It starts read-only without primary_conninfo: WAL comes from restore_command only.
    let mut n = nostream();
    let c = cluster(Some("n2"));
    let p = n.decide(&obs(0, &c, &stopped(ClusterState::ShutDownInRecovery, false)));
    assert_eq!(p.actions, vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))], "{p:?}");
    assert!(p.message.contains("archive"), "{}", p.message);
    // Running with a stream (before the tag was set), it stops streaming.
    let a = decide(&mut n, &obs(1, &c, &replica(Some(5002), 1000)));
    assert!(a.contains(&Action::Follow { upstream: None }), "{a:?}");
    // Not streaming, it is left alone.
    let a = decide(&mut n, &obs(2, &c, &replica(None, 1000)));
    assert!(!a.iter().any(|x| matches!(x, Action::Follow { .. })), "{a:?}");

    // The leader keeps no slot for it and does not publish its name in retain_slots; the other
    // replicas keep none for it either.
    let mut tagged = cluster(Some(ME));
    tagged.members[2].data.tags.nostream = true;
    let mut leader = HaNode::new(settings());
    hold(&mut leader);
    let t = slot_targets_of(&decide(&mut leader, &obs(0, &tagged, &primary())));
    assert_eq!(t.wanted.keys().collect::<Vec<_>>(), ["n2"], "{t:?}");
    assert!(!t.retain.contains(&"n3".to_string()), "{:?}", t.retain);
    let mut other = HaNode::new(NodeSettings { name: "n2".into(), ..settings() });
    let t = slot_targets_of(&decide(&mut other, &obs(0, &tagged, &replica(Some(5001), 1000))));
    assert!(!t.wanted.contains_key("n3"), "{t:?}");
}

#[test]
fn the_nostream_tag_reads_patronis_forms() {
    let tags: Tags = serde_json::from_str(r#"{"nostream": "true"}"#).unwrap();
    assert!(tags.nostream);
    let tags: Tags = serde_json::from_str(r#"{"nostream": false}"#).unwrap();
    assert!(!tags.nostream);
    assert_eq!(serde_json::to_string(&Tags { nostream: true, ..Default::default() }).unwrap(), r#"{"nostream":true}"#);
}
