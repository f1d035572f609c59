//! Story: failsafe mode, told through the core alone (virtual time, no I/O).
//!
//! A three-member cluster (n1 leads, n2 and n3 replicate) with `failsafe_mode: true`, ttl 10 s,
//! loop_wait 1 s. The leader loses the DCS. While every member accepts its `POST /failsafe`, it
//! stays primary long past its lease; once one member does not accept, it demotes at once (as
//! Patroni does) and serves reads. Replicas holding a fresh ping do not race, even when they see
//! the leader key gone.

use rampart_core::action::{Action, ActionResult, StopMode};
use rampart_core::failsafe::{Ping, Reply, Round};
use rampart_core::lsn::Lsn;
use rampart_core::model::{Cluster, Leader, Member, Status};
use rampart_core::observe::{
    ClusterState, ControlData, DataDir, DcsView, LocalPg, Millis, Observation, PeerReport, PeerStatus, PgProcess,
    RunningPg, WalPositions,
};
use rampart_core::{DynamicConfig, HaNode, MemberData, NodeSettings};

const TTL: u64 = 10;

fn config(failsafe: bool) -> DynamicConfig {
    DynamicConfig { ttl: TTL, loop_wait: 1, retry_timeout: 3, failsafe_mode: Some(failsafe), ..Default::default() }
}

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        data: MemberData {
            conn_url: format!("postgres://{name}:5432/postgres"),
            api_url: format!("http://{name}:8008/patroni"),
            state: "running".into(),
            role: "replica".into(),
            ..Default::default()
        },
        lease: 1,
    }
}

fn cluster(leader: Option<&str>, failsafe: bool) -> Cluster {
    let members = vec![member("n1"), member("n2"), member("n3")];
    let mut c = Cluster {
        initialize: Some("7000".into()),
        config: Some(config(failsafe)),
        members,
        status: Status { optime: 1000, ..Default::default() },
        ..Default::default()
    };
    c.failsafe = Some(rampart_core::failsafe::topology_of(&c));
    c.leader = leader.map(|l| Leader { name: l.into(), lease: 1, mod_revision: 1 });
    c
}

fn node(name: &str) -> HaNode {
    HaNode::new(NodeSettings { name: name.into(), bootstrap_dcs: config(true), ..Default::default() })
}

fn running(in_recovery: bool) -> LocalPg {
    let state = if in_recovery { ClusterState::InArchiveRecovery } else { ClusterState::InProduction };
    LocalPg {
        data: DataDir::Initialized(ControlData {
            sysid: "7000".into(),
            state,
            timeline: 1,
            checkpoint_lsn: Lsn(900),
            min_recovery_timeline: 0,
            min_recovery_lsn: Lsn(0),
            hot_standby: Default::default(),
        }),
        process: PgProcess::Running(RunningPg {
            in_recovery,
            timeline: 1,
            wal: WalPositions { flush: Some(Lsn(1000)), received: Some(Lsn(1000)), ..Default::default() },
            streaming: in_recovery,
            upstream: in_recovery.then(|| ("n1".to_string(), 5432)),
            ..Default::default()
        }),
    }
}

fn obs<'a>(now: u64, dcs: DcsView<'a>, local: &'a LocalPg) -> Observation<'a> {
    Observation {
        now: Millis(now),
        wall_clock_ms: 0,
        request: None,
        dcs,
        local,
        job: None,
        peers: None,
        failsafe_round: None,
        failsafe_ping: None,
        watchdog_unusable: None,
    }
}

fn round(at: u64, accepted: &[(&str, bool)]) -> Round {
    Round {
        sent_at: Millis(at),
        finished_at: Millis(at + 50),
        replies: accepted.iter().map(|(n, a)| Reply { name: n.to_string(), accepted: *a, lsn: None }).collect(),
    }
}

/// n1 leads with a lock renewed at t = 0 and the failsafe topology known.
fn leading_n1() -> HaNode {
    let mut n1 = node("n1");
    let c = cluster(Some("n1"), true);
    let local = running(false);
    let plan = n1.decide(&obs(0, DcsView::Ok(&c), &local));
    assert!(plan.actions.contains(&Action::RenewLeader), "{plan:?}");
    n1.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: TTL });
    n1
}

#[test]
fn the_leader_writes_the_topology_when_it_changed() {
    let mut n1 = node("n1");
    let mut c = cluster(Some("n1"), true);
    c.failsafe = None;
    let local = running(false);
    let plan = n1.decide(&obs(0, DcsView::Ok(&c), &local));
    let want = rampart_core::failsafe::topology_of(&c);
    assert!(plan.actions.contains(&Action::WriteFailsafe(want)), "{plan:?}");
    let same = cluster(Some("n1"), true);
    let plan = n1.decide(&obs(1_000, DcsView::Ok(&same), &local));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::WriteFailsafe(_))), "unchanged: not rewritten");
    let off = cluster(Some("n1"), false);
    let plan = node("n1").decide(&obs(0, DcsView::Ok(&off), &local));
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::WriteFailsafe(_))), "failsafe_mode off: no key");
}

#[test]
fn every_member_accepting_keeps_the_primary_past_its_lease() {
    let mut n1 = leading_n1();
    let local = running(false);
    let targets = n1.failsafe_targets().cloned().expect("the leader knows whom to ask");
    assert_eq!(targets.keys().cloned().collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    // Rounds every second for 30 s (three ttls), each accepted by n2 and n3.
    for t in (1_000..30_000).step_by(1_000) {
        let r = round(t, &[("n2", true), ("n3", true)]);
        let o = Observation { failsafe_round: Some(&r), ..obs(t, DcsView::Unavailable("refused".into()), &local) };
        let plan = n1.decide(&o);
        assert!(!plan.actions.contains(&Action::Stop(StopMode::Immediate)), "t={t}: {plan:?}");
        assert!(plan.message.contains("failsafe mode is enabled and all members are accessible"), "{}", plan.message);
        assert!(n1.failsafe_active(Millis(t)));
        assert!(n1.fence_deadline().unwrap() > Millis(t + 5_000), "the proof moves the deadline");
    }
}

#[test]
fn a_member_that_does_not_accept_ends_the_primary_at_once_and_it_serves_reads() {
    // Patroni's contract for failsafe mode: the primary outlives the DCS only while every member
    // of the topology accepts it. (replies of the round after the cut)
    let table: [&[(&str, bool)]; 3] = [
        &[("n2", true)],                // n3 silent
        &[("n2", true), ("n3", false)], // n3 refuses (e.g. it runs as primary)
        &[],                            // nobody answers
    ];
    for replies in table {
        let mut n1 = leading_n1();
        let local = running(false);
        let r = round(500, replies);
        let o = Observation { failsafe_round: Some(&r), ..obs(500, DcsView::Unavailable("refused".into()), &local) };
        let plan = n1.decide(&o);
        assert_eq!(plan.actions, vec![Action::Stop(StopMode::Fast)], "{replies:?}: {}", plan.message);
        assert!(
            plan.message.contains("demoting self because DCS is not accessible and I was a leader"),
            "{}",
            plan.message
        );
        assert!(!n1.failsafe_active(Millis(500)));
        // Stopped, it comes back read-only following nobody while the DCS stays away, once.
        let mut down = running(false);
        down.process = PgProcess::Stopped;
        let plan = n1.decide(&obs(1_000, DcsView::Unavailable("refused".into()), &down));
        let start = Action::StartJob(rampart_core::Job::Start(rampart_core::StartRole::Replica { upstream: None }));
        assert_eq!(plan.actions, vec![start], "{}", plan.message);
        let replica = running(true);
        let plan = n1.decide(&obs(2_000, DcsView::Unavailable("refused".into()), &replica));
        assert!(plan.actions.is_empty(), "{plan:?}");
    }
}

#[test]
fn without_a_round_the_primary_keeps_its_lease_until_the_fence_deadline() {
    // No round result this cycle (say the driver could not send it): the lease still vouches.
    let mut n1 = leading_n1();
    let local = running(false);
    let deadline = n1.fence_deadline().unwrap();
    let mut stopped_at = None;
    for t in (500..20_000).step_by(500) {
        let plan = n1.decide(&obs(t, DcsView::Unavailable("refused".into()), &local));
        if plan.actions.contains(&Action::Stop(StopMode::Immediate)) {
            stopped_at = Some(t);
            break;
        }
        assert!(plan.next_cycle <= deadline, "the loop looks again before the deadline");
    }
    let stopped_at = stopped_at.expect("the primary was stopped");
    assert!(Millis(stopped_at) >= deadline && stopped_at < deadline.0 + 500, "stopped at {stopped_at}");
}

#[test]
fn a_complete_round_after_the_fence_deadline_does_not_revive_the_primary() {
    let mut n1 = leading_n1();
    let local = running(false);
    let late = n1.fence_deadline().unwrap().0 + 100;
    let r = round(late - 1_000, &[("n2", true), ("n3", true)]);
    let r = Round { finished_at: Millis(late), ..r };
    let o = Observation { failsafe_round: Some(&r), ..obs(late, DcsView::Unavailable("hang".into()), &local) };
    assert!(n1.decide(&o).actions.contains(&Action::Stop(StopMode::Immediate)));
}

#[test]
fn the_dcs_back_the_leader_renews_or_retakes_its_lock() {
    let mut n1 = leading_n1();
    let local = running(false);
    for t in [1_000, 2_000, 3_000] {
        let r = round(t, &[("n2", true), ("n3", true)]);
        n1.decide(&Observation { failsafe_round: Some(&r), ..obs(t, DcsView::Unavailable("x".into()), &local) });
    }
    // The lease expired meanwhile: the key is gone, and the running primary takes it again.
    let c = cluster(None, true);
    let plan = n1.decide(&obs(20_000, DcsView::Ok(&c), &local));
    assert_eq!(plan.actions, vec![Action::AcquireLeader], "{}", plan.message);
    assert!(!n1.failsafe_active(Millis(20_000)), "failsafe ends as soon as the DCS answers");
}

#[test]
fn replicas_bound_by_a_ping_or_missing_from_the_topology_do_not_race() {
    // The old primary is out of sight (no WAL streams from it), the case where a race could start.
    let mut local = running(true);
    if let PgProcess::Running(r) = &mut local.process {
        r.streaming = false;
    }
    let c = cluster(None, true);
    let peers = vec![
        PeerReport { name: "n1".into(), status: None },
        PeerReport {
            name: "n3".into(),
            status: Some(PeerStatus { is_primary: false, wal: Lsn(10), timeline: 1, can_fail_over: true, priority: 1 }),
        },
    ];
    let ping = Ping { leader: "n1".into(), received_at: Millis(5_000), slots: Default::default() };
    // (ping, now, topology lists n2, races)
    let table = [
        (None, 20_000, true, true),
        (Some(&ping), 6_000, true, false),
        (Some(&ping), 14_999, true, false),
        (Some(&ping), 15_000, true, true),
        (None, 20_000, false, false),
    ];
    for (i, (p, now, listed, races)) in table.into_iter().enumerate() {
        let mut c = c.clone();
        if !listed {
            c.failsafe.as_mut().unwrap().remove("n2");
        }
        let mut n2 = node("n2");
        let o = Observation { peers: Some(&peers), failsafe_ping: p, ..obs(now, DcsView::Ok(&c), &local) };
        let plan = n2.decide(&o);
        assert_eq!(plan.actions.contains(&Action::AcquireLeader), races, "row {i}: {}", plan.message);
    }
}

/// The sync-slots action of a plan, if any.
fn slot_sync(actions: &[Action]) -> Option<&rampart_core::slots::SlotTargets> {
    actions.iter().find_map(|a| match a {
        Action::SyncSlots(t) => Some(t),
        _ => None,
    })
}

#[test]
fn slots_keep_following_the_primary_while_the_dcs_is_down() {
    // n3 cascades from n2; a permanent physical slot "perm" is configured.
    let mut c = cluster(Some("n1"), true);
    c.config.as_mut().unwrap().slots = Some(serde_json::json!({"perm": null}));
    c.members.iter_mut().find(|m| m.name == "n3").unwrap().data.tags.replicatefrom = Some("n2".into());
    let c = c;

    // The leader, kept by its members: it still keeps its slots, moving n3's idle one to where
    // n3 said it is in its answer.
    let mut n1 = node("n1");
    let primary = running(false);
    n1.decide(&obs(0, DcsView::Ok(&c), &primary));
    n1.advance(ActionResult::Leader { held: true, sent_at: Millis(0), ttl_secs: TTL });
    let mut r = round(1_000, &[("n2", true), ("n3", true)]);
    r.replies.iter_mut().for_each(|x| x.lsn = Some(4_000));
    let o = Observation { failsafe_round: Some(&r), ..obs(1_000, DcsView::Unavailable("refused".into()), &primary) };
    let plan = n1.decide(&o);
    let t = slot_sync(&plan.actions).unwrap_or_else(|| panic!("no slot sync: {plan:?}"));
    assert!(t.primary && t.wanted.contains_key("perm"));
    assert_eq!(t.positions.get("n3"), Some(&4_000), "n3 streams from n2: its slot here follows its answer");
    assert_eq!(t.positions.get("n2"), None, "n2 streams through its slot here");

    // A replica bound by the primary's ping advances its slots to the positions it sent.
    let mut n2 = node("n2");
    let replica = running(true);
    n2.decide(&obs(0, DcsView::Ok(&c), &replica));
    let slots: std::collections::BTreeMap<String, u64> =
        [("perm".to_string(), 3_000), ("n1".to_string(), 3_500)].into();
    let ping = Ping { leader: "n1".into(), received_at: Millis(1_000), slots: slots.clone() };
    let o = Observation { failsafe_ping: Some(&ping), ..obs(2_000, DcsView::Unavailable("refused".into()), &replica) };
    let plan = n2.decide(&o);
    let t = slot_sync(&plan.actions).unwrap_or_else(|| panic!("no slot sync: {plan:?}"));
    assert!(!t.primary && t.wanted.contains_key("perm") && t.wanted.contains_key("n1"));
    assert_eq!(t.positions, slots);
    // Once the ping no longer binds, the replica knows nothing fresh: it leaves its slots be.
    let o = Observation { failsafe_ping: Some(&ping), ..obs(11_000, DcsView::Unavailable("refused".into()), &replica) };
    assert_eq!(slot_sync(&n2.decide(&o).actions), None);
    // Without failsafe mode nothing is kept during an outage.
    let off = cluster(Some("n1"), false);
    let mut n2 = node("n2");
    n2.decide(&obs(0, DcsView::Ok(&off), &replica));
    let o = Observation { failsafe_ping: Some(&ping), ..obs(2_000, DcsView::Unavailable("refused".into()), &replica) };
    assert_eq!(slot_sync(&n2.decide(&o).actions), None);
}
