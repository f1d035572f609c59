//! The driver's unit tests, through the simulation's in-memory ports ([`crate::agent::sim`]) on
//! paused (virtual) time: a failed action stops the rest of the plan, action results reach the
//! core (a renewal's send time sets the fence deadline, a lost compare-and-swap on `sync` stops
//! the plan), and a job's typed error reaches the core's retry rule.

use std::time::Duration;

use rampart_core::model::{MemberData, SyncState};
use rampart_core::observe::{JobError, JobKind};
use rampart_core::{Action, Millis, Plan, StopMode, SyncMode};

use super::Agent;
use crate::agent::sim::{self, ports_world, SharedWorld, SimPorts, WatchdogModel};

/// A plan of `actions`, as the core would return it.
fn plan(actions: Vec<Action>) -> Plan {
    Plan { actions, answer: None, message: "test plan".into(), next_cycle: Millis(0), holds_address: false }
}

/// The starting world (n0 a primary, n1 and n2 its replicas), and n0's agent.
fn n0(mode: SyncMode) -> (SharedWorld, Agent<SimPorts>) {
    let world = ports_world(mode);
    let agent = sim::agent(&world, 0, mode, WatchdogModel::Modelled, -1);
    (world, agent)
}

/// Runs `actions` as one plan, on what the agent observes now.
async fn execute(agent: &mut Agent<SimPorts>, actions: Vec<Action>) {
    let (local, probe, _) = agent.observe_local().await;
    agent.execute(&plan(actions), &local, probe.as_ref(), None).await.expect("nothing fatal");
}

fn cut_from_dcs(world: &SharedWorld, cut: bool) {
    world.lock().unwrap().machines[0].dcs_cut_until = if cut { 1_000_000_000 } else { 0 };
}

fn pg_running(world: &SharedWorld, i: usize) -> bool {
    world.lock().unwrap().machines[i].pg.running
}

#[tokio::test(start_paused = true)]
async fn a_failed_action_stops_the_rest_of_the_plan() {
    let (world, mut agent) = n0(SyncMode::Off);
    cut_from_dcs(&world, true);
    execute(&mut agent, vec![Action::ClearFailover, Action::Stop(StopMode::Fast)]).await;
    assert!(pg_running(&world, 0), "the stop after the DCS write that failed must not run");
    cut_from_dcs(&world, false);
    execute(&mut agent, vec![Action::ClearFailover, Action::Stop(StopMode::Fast)]).await;
    assert!(!pg_running(&world, 0), "the same plan with the DCS answering runs to its end");
}

#[tokio::test(start_paused = true)]
async fn a_lock_renewal_moves_the_fence_deadline_from_when_it_was_sent() {
    let (world, mut agent) = n0(SyncMode::Off);
    let ttl_ms = agent.core.config().ttl * 1000;
    let sent = agent.now();
    execute(&mut agent, vec![Action::AcquireLeader]).await;
    assert_eq!(agent.core.leader_until(), Some(Millis(sent.0 + ttl_ms)));

    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = agent.now();
    execute(&mut agent, vec![Action::RenewLeader]).await;
    let until = Millis(sent.0 + ttl_ms);
    assert_eq!(agent.core.leader_until(), Some(until), "measured from when the renewal was sent");
    assert!(agent.core.fence_deadline().is_some_and(|f| f < until), "fencing comes before the lease ends");

    // A renewal that gets no answer leaves the deadline where the last one that did put it.
    cut_from_dcs(&world, true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    execute(&mut agent, vec![Action::RenewLeader]).await;
    assert_eq!(agent.core.leader_until(), Some(until));
}

#[tokio::test(start_paused = true)]
async fn a_lost_compare_and_swap_on_sync_stops_the_plan() {
    let (world, mut agent) = n0(SyncMode::On);
    let state = SyncState { leader: Some("n0".into()), sync_standby: Some("n1".into()), quorum: None };
    let names = || Action::SetSynchronousStandbyNames("n1".into());
    let sync_key = |w: &SharedWorld| {
        let w = w.lock().unwrap();
        w.store.get(&w.prefix.key(rampart_core::keys::SYNC)).map(str::to_string)
    };
    // Someone else wrote the key since it was read (revision 12345 is not its revision).
    execute(&mut agent, vec![Action::WriteSync { state: state.clone(), expected_revision: 12345 }, names()]).await;
    assert_eq!(sync_key(&world), None);
    assert_eq!(world.lock().unwrap().machines[0].pg.ssn, "", "synchronous_standby_names untouched");
    // Expected absent, and absent: written, then the setting follows.
    execute(&mut agent, vec![Action::WriteSync { state, expected_revision: 0 }, names()]).await;
    assert!(sync_key(&world).is_some_and(|v| v.contains("n1")));
    assert_eq!(world.lock().unwrap().machines[0].pg.ssn, "n1");
}

/// n0, a former primary whose WAL went past the fork, stopped; n1 leads on timeline 2. The next
/// rewind fails with `error`; returns how many rewinds n0 started within 30 s, and whether its
/// PostgreSQL runs (as n1's replica) at the end.
async fn rejoin_after_a_failed_rewind(error: JobError) -> (usize, bool) {
    let world = ports_world(SyncMode::Off);
    {
        let mut w = world.lock().unwrap();
        let fork = 1 << 20;
        let n0 = &mut w.machines[0].pg;
        (n0.running, n0.crashed, n0.in_recovery, n0.wal) = (false, false, false, fork + 4096);
        let n1 = &mut w.machines[1].pg;
        (n1.in_recovery, n1.upstream, n1.timeline, n1.wal, n1.was_primary) = (false, None, 2, fork + 8192, true);
        n1.history = vec![(1, fork)];
        let n2 = &mut w.machines[2].pg;
        n2.upstream = Some(1);
        n2.conf_upstream = Some(1);
        let prefix = w.prefix.clone();
        let member = MemberData {
            conn_url: format!("postgres://127.0.0.1:{}/postgres", sim::pg_port(1)),
            api_url: "http://127.0.0.1:8001/patroni".into(),
            state: "running".into(),
            role: "primary".into(),
            timeline: Some(2),
            xlog_location: Some(fork + 8192),
            ..Default::default()
        };
        w.store.put(prefix.member("n1"), serde_json::to_string(&member).unwrap(), 0);
        w.store.put(prefix.key(rampart_core::keys::LEADER), "n1".into(), 0);
        w.store.put(
            prefix.key(rampart_core::keys::HISTORY),
            format!("[[1,{fork},\"no recovery target specified\"]]"),
            0,
        );
        w.fail_next_job = Some((JobKind::Rewind, error));
    }
    let agent = sim::agent(&world, 0, SyncMode::Off, WatchdogModel::Modelled, -1);
    let (stops, hangups) = crate::agent::signals::never();
    let _ = tokio::time::timeout(Duration::from_secs(30), agent.run(stops, hangups)).await;
    let w = world.lock().unwrap();
    let rewinds = w.jobs_started.iter().filter(|(_, i, k)| *i == 0 && *k == JobKind::Rewind).count();
    (rewinds, w.machines[0].pg.running && w.machines[0].pg.upstream == Some(1))
}

#[tokio::test(start_paused = true)]
async fn a_rewind_that_left_the_data_directory_untouched_is_tried_again() {
    let untouched = JobError::RewindUntouched { status: "exit status: 1".into(), output_tail: "No space left".into() };
    let (rewinds, rejoined) = rejoin_after_a_failed_rewind(untouched).await;
    assert_eq!(rewinds, 2, "tried again after loop_wait");
    assert!(rejoined, "the second rewind worked: it follows the leader");
}

#[tokio::test(start_paused = true)]
async fn a_rewind_that_failed_past_its_point_of_no_return_waits_for_an_operator() {
    let (rewinds, rejoined) = rejoin_after_a_failed_rewind(JobError::Failed("pg_rewind crashed".into())).await;
    assert_eq!(rewinds, 1, "not tried again");
    assert!(!rejoined, "PostgreSQL is not started on a half-rewound data directory");
}

#[tokio::test(start_paused = true)]
async fn a_release_publishes_the_position_the_plan_carries() {
    let (world, mut agent) = n0(SyncMode::Off);
    let key = |w: &SharedWorld, k: &str| {
        let w = w.lock().unwrap();
        w.store.get(&w.prefix.key(k)).map(str::to_string)
    };
    execute(&mut agent, vec![Action::AcquireLeader]).await;
    assert!(key(&world, rampart_core::keys::LEADER).is_some());
    execute(&mut agent, vec![Action::ReleaseLeader { last_position: Some(777) }]).await;
    assert_eq!(key(&world, rampart_core::keys::LEADER), None, "released");
    let status: serde_json::Value = serde_json::from_str(&key(&world, rampart_core::keys::STATUS).unwrap()).unwrap();
    assert_eq!(status["optime"], 777);
    assert_eq!(agent.core.leader_until(), None, "the core heard of it");
}

#[tokio::test(start_paused = true)]
async fn what_the_files_were_written_with_reaches_the_core() {
    let world = ports_world(SyncMode::On);
    let mut agent = sim::agent(&world, 1, SyncMode::On, WatchdogModel::Modelled, -1);
    let n2 = rampart_core::Upstream { name: "n2".into(), host: "127.0.0.1".into(), port: sim::pg_port(2) };
    execute(&mut agent, vec![Action::Follow { upstream: Some(n2.clone()) }]).await;
    let (local, _, _) = agent.observe_local().await;
    assert_eq!(agent.core.replica_upstream(&local, None), Some(n2), "a later rewrite keeps the new upstream");
    execute(&mut agent, vec![Action::SetSynchronousStandbyNames("ANY 1 (n0)".into())]).await;
    assert_eq!(agent.core.managed_sync_names(), Some("ANY 1 (n0)"));
}

#[tokio::test(start_paused = true)]
async fn a_history_the_dcs_lacks_is_published_from_the_history_file() {
    let (world, mut agent) = n0(SyncMode::Off);
    {
        let mut w = world.lock().unwrap();
        let pg = &mut w.machines[0].pg;
        (pg.history, pg.timeline) = (vec![(1, 4096), (2, 8192)], 3);
    }
    execute(&mut agent, vec![Action::PublishHistory { timeline: 3 }]).await;
    let w = world.lock().unwrap();
    let history = w.store.get(&w.prefix.key(rampart_core::keys::HISTORY)).map(str::to_string).expect("written");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0][0].as_u64(), entries[0][1].as_u64()), (Some(1), Some(4096)));
    assert_eq!((entries[1][0].as_u64(), entries[1][1].as_u64()), (Some(2), Some(8192)));
    assert_eq!(entries[1][4], "n0", "the newest switch is ours, as after a promotion");
}
