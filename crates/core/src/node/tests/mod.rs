//! Table tests of the decision, one scenario per test, named for the rule it checks.

use super::*;
use crate::lsn::Lsn;
use crate::model::{Leader, Member, MemberData, Status};
use crate::observe::{ClusterState, JobError, LocalPg, PeerReport, PeerStatus, WalPositions};

const ME: &str = "n1";

pub(super) fn settings() -> NodeSettings {
    NodeSettings { name: ME.into(), bootstrap_dcs: DynamicConfig::default(), ..Default::default() }
}

pub(super) fn member(name: &str, port: u16, role: &str) -> Member {
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
pub(super) fn cluster(leader: Option<&str>) -> Cluster {
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
pub(super) fn promoted(mut c: Cluster) -> Cluster {
    let leader = c.leader.as_ref().unwrap().name.clone();
    c.members.iter_mut().filter(|m| m.name == leader).for_each(|m| m.data.timeline = Some(2));
    c
}

pub(super) fn ctl(state: ClusterState) -> ControlData {
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

pub(super) fn primary() -> LocalPg {
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

pub(super) fn replica(upstream_port: Option<u16>, wal: u64) -> LocalPg {
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

pub(super) fn stopped(state: ClusterState, crashed: bool) -> LocalPg {
    LocalPg {
        data: DataDir::Initialized(ctl(state)),
        process: if crashed { PgProcess::Crashed } else { PgProcess::Stopped },
    }
}

pub(super) fn empty() -> LocalPg {
    LocalPg { data: DataDir::Empty, process: PgProcess::Stopped }
}

pub(super) fn obs<'a>(now: u64, c: &'a Cluster, local: &'a LocalPg) -> Observation<'a> {
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

pub(super) fn decide(node: &mut HaNode, o: &Observation<'_>) -> Vec<Action> {
    node.decide(o).actions
}

/// The release a member with `local` asks for: it publishes `local`'s last position.
pub(super) fn released(local: &LocalPg) -> Action {
    Action::ReleaseLeader { last_position: local.last_position() }
}

pub(super) fn releases(a: &Action) -> bool {
    matches!(a, Action::ReleaseLeader { .. })
}

pub(super) fn up(name: &str, port: u16) -> Upstream {
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
fn leader_renews_keeps_slots_for_the_others_and_writes_status_only_when_it_changes() {
    let mut n = HaNode::new(settings());
    // The key already holds our flush position: nothing to write (an idle leader costs etcd no
    // write, as with Patroni).
    let c = cluster(Some(ME));
    assert_eq!(c.status.optime, 1000);
    let l = primary();
    let p = n.decide(&obs(0, &c, &l));
    assert_eq!(p.actions, vec![Action::RenewLeader, slots_for(true, &["n2", "n3"])]);
    assert!(p.message.contains("the leader with the lock"));
    // The key lags behind: our position is published.
    let behind = Cluster { status: Status { optime: 900, ..Default::default() }, ..cluster(Some(ME)) };
    let p = n.decide(&obs(1, &behind, &l));
    let status = Action::WriteStatus(Status { optime: 1000, ..Default::default() });
    assert_eq!(p.actions, vec![Action::RenewLeader, status, slots_for(true, &["n2", "n3"])]);
}

#[test]
fn a_release_publishes_the_flush_position_of_a_primary_or_the_last_checkpoint() {
    assert_eq!(primary().last_position(), Some(1000));
    assert_eq!(replica(Some(5002), 1000).last_position(), Some(900), "a replica has no flush position");
    assert_eq!(stopped(ClusterState::ShutDown, false).last_position(), Some(900));
    assert_eq!(empty().last_position(), None);
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
fn the_virtual_address_follows_the_confirmed_lock_and_goes_at_the_fence_deadline_or_a_demotion() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    assert!(!n.decide(&obs(0, &c, &l)).holds_address, "the key names us, but this process confirmed nothing yet");
    hold(&mut n);
    assert!(n.decide(&obs(1_000, &c, &l)).holds_address, "the confirmed leader running a primary");
    let down = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(10_000, &c, &l) };
    assert!(n.decide(&down).holds_address, "inside the lease without the DCS");
    let late = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(25_000, &c, &l) };
    let p = n.decide(&late);
    assert!(!p.holds_address && p.actions == vec![Action::Stop(StopMode::Immediate)], "{p:?}");

    // Another member holds the lock: this primary demotes, and the address goes first.
    let mut n = HaNode::new(settings());
    hold(&mut n);
    let p = n.decide(&obs(1_000, &cluster(Some("n2")), &l));
    assert!(!p.actions.is_empty() && !p.holds_address, "{p:?}");
    // The leader of a standby cluster runs in recovery: no address.
    let mut n = HaNode::new(settings());
    hold(&mut n);
    assert!(!n.decide(&obs(1_000, &c, &replica(None, 1000))).holds_address);
}

/// Found by the simulation: a leader whose PostgreSQL died while the DCS was away has nothing
/// to stop at its fence deadline, and must give the lock up all the same (the driver bounds every
/// DCS call by the fence deadline, so one kept in the past would never let it read the DCS again).
#[test]
fn a_leader_whose_postgres_died_while_the_dcs_was_away_gives_the_lock_up_at_its_fence_deadline() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    decide(&mut n, &obs(0, &c, &l));
    n.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: 30 });
    let dead = stopped(ClusterState::InProduction, true);
    let early = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(10_000, &c, &dead) };
    n.decide(&early);
    assert_eq!(n.fence_deadline(), Some(Millis(25_000)), "still inside the lease");
    let late = Observation { dcs: DcsView::Unavailable("timeout".into()), ..obs(25_000, &c, &dead) };
    n.decide(&late);
    assert_eq!(n.fence_deadline(), None);
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
pub(super) fn slots_before_promotion(members: &[&str]) -> Action {
    let mut a = slots_for(false, members);
    if let Action::SyncSlots(t) = &mut a {
        t.idle.clear();
    }
    a
}

pub(super) fn peer(name: &str, wal: u64, primary: bool) -> PeerReport {
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
    assert_eq!(n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &c, &l) }).actions, vec![released(&l)]);
    assert!(n.race_backoff(Millis(1)));
    // A leader running a primary whose watchdog can no longer be armed demotes.
    let mut n = HaNode::new(settings());
    let l = primary();
    assert_eq!(
        n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &c, &l) }).actions,
        vec![Action::Stop(StopMode::Immediate), released(&l)]
    );
    // In maintenance mode the rule is off, as in Patroni.
    let mut n = HaNode::new(settings());
    let mut paused = cluster(Some(ME));
    paused.config.as_mut().unwrap().pause = Some(true);
    let p = n.decide(&Observation { watchdog_unusable: no_dev, ..obs(0, &paused, &l) });
    assert!(!p.actions.iter().any(releases), "{:?}", p.actions);
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
    assert_eq!(decide(&mut n, &o), vec![released(&l), Action::RoleChangeCallback("demoted".into())]);
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
    assert_eq!(p.actions, vec![released(&l)]);
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
    assert_eq!(decide(&mut n, &obs(6_000, &c, &l)), vec![released(&l), Action::RoleChangeCallback("demoted".into())]);
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
pub(super) fn hold(n: &mut HaNode) {
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
        assert!(!n.decide_shutdown(&obs(1, &c, &local)).actions.iter().any(releases));
    }
    let mut n = HaNode::new(settings());
    let p = n.decide(&obs(0, &c, &empty()));
    assert!(p.message.contains("does not hold the lock"), "{}", p.message);
    // The agent that did take it releases it when its data directory is emptied under it.
    hold(&mut n);
    assert_eq!(decide(&mut n, &obs(1, &c, &empty())), vec![released(&empty())]);
}

#[test]
fn shutdown_stops_postgres_before_releasing_the_lock() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some(ME));
    let l = primary();
    hold(&mut n);
    assert_eq!(n.decide_shutdown(&obs(0, &c, &l)).actions, vec![Action::Stop(StopMode::Fast), released(&l)]);
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
    let l = stopped(ClusterState::InProduction, true);
    let p = leader.decide(&obs(1_000, &c, &l));
    assert_eq!(p.actions, vec![released(&l)]);
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

mod handovers;
mod hot_standby_settings;
mod rewind;
mod slot_sync;
mod standby_cluster;
mod synchronous;
use handovers::*;
use slot_sync::*;

#[test]
fn the_configuration_follows_the_upstream_last_written_or_found_after_a_restart() {
    let mut n = HaNode::new(settings());
    let c = cluster(Some("n2"));
    let l = replica(Some(5002), 1000);
    // After an agent restart: recognised from primary_conninfo.
    assert_eq!(n.replica_upstream(&l, Some(&c)), Some(up("n2", 5002)));
    assert_eq!(n.replica_upstream(&l, None), Some(up("n2", 5002)), "remembered once found");
    // What the agent wrote since wins over what the server shows until it reloads.
    n.advance(ActionResult::Configured(StartRole::Replica { upstream: Some(up("n3", 5003)) }));
    assert_eq!(n.replica_upstream(&l, Some(&c)), Some(up("n3", 5003)));
    n.advance(ActionResult::Configured(StartRole::Replica { upstream: None }));
    assert_eq!(n.replica_upstream(&l, Some(&c)), None, "streaming from nowhere on purpose");
    assert_eq!(n.replica_upstream(&primary(), Some(&c)), None, "not a replica");
    // Unknown host and port: nothing to rewrite the recovery settings with.
    assert_eq!(HaNode::new(settings()).replica_upstream(&replica(Some(6000), 1000), Some(&c)), None);
    assert_eq!(Job::Promote.configures(), Some(StartRole::Primary));
    assert_eq!(Job::Clone(None).configures(), None);
}

#[test]
fn on_role_change_fires_once_per_change_of_the_running_server() {
    let mut n = HaNode::new(settings());
    assert_eq!(n.role_change(&replica(Some(5002), 1000)), None, "first sight");
    assert_eq!(n.role_change(&replica(Some(5002), 1000)), None);
    assert_eq!(n.role_change(&primary()), Some(Role::Primary));
    // Down for a while (a crash, a switchover's stop): no role to report, and no repeat.
    for _ in 0..3 {
        assert_eq!(n.role_change(&stopped(ClusterState::ShutDown, false)), None);
    }
    assert_eq!(n.role_change(&primary()), None, "still the primary it was");
    assert_eq!(n.role_change(&replica(Some(5002), 1000)), Some(Role::Replica));
    // Callbacks of a start or reload report the role the configuration was written for.
    assert_eq!(n.callback_role(), Role::Replica);
    n.advance(ActionResult::Configured(StartRole::Primary));
    assert_eq!(n.callback_role(), Role::Primary);
}
