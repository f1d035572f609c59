//! Table tests: hot-standby settings below the primary's.

use super::*;

/// A replica running `max_connections = running` whose control file asks for `needed`, with
/// replay in pause state `pause`.
pub(super) fn replica_below_control(running: i64, needed: i64, pause: crate::hot_standby::ReplayPause) -> LocalPg {
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
