//! Table tests: replication slots on the leader and on replicas.

use super::*;
/// The slot sync of a member whose wanted slots are the physical slots of `members` (no
/// permanent slots, nothing published yet).
/// The slots wanted for `members`; as primary of [`cluster`] it publishes the slot names of all
/// three members in `retain_slots`; as a replica nobody streams from, all of them are idle.
pub(super) fn slots_for(primary: bool, members: &[&str]) -> Action {
    Action::SyncSlots(crate::slots::SlotTargets {
        primary,
        wanted: members.iter().map(|m| (m.to_string(), crate::slots::SlotKind::Physical)).collect(),
        retain: if primary { vec!["n1".into(), "n2".into(), "n3".into()] } else { vec![] },
        idle: if primary { Default::default() } else { members.iter().map(|m| m.to_string()).collect() },
        ..Default::default()
    })
}

/// `cluster` with a permanent logical slot `cdc` configured and the leader's published slots.
pub(super) fn with_cdc_slot(mut c: Cluster, published: &[(&str, u64)], retain: &[&str]) -> Cluster {
    let cfg = c.config.as_mut().unwrap();
    cfg.slots = Some(serde_json::json!({"cdc": {"type": "logical", "database": "app", "plugin": "test_decoding"}}));
    c.status.slots = published.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    c.status.retain_slots = retain.iter().map(|s| s.to_string()).collect();
    c
}

/// An active physical slot at `position`, as the server lists it.
fn have(name: &str, position: u64) -> crate::slots::ExistingSlot {
    crate::slots::ExistingSlot {
        name: name.into(),
        kind: crate::slots::SlotKind::Physical,
        active: true,
        position: Some(position),
        holds_xmin: false,
    }
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

/// A cycle on `o` that syncs the slots, and its result: `missing` logical slots.
fn report_missing(n: &mut HaNode, o: &Observation<'_>, missing: &[&str]) {
    let a = decide(n, o);
    assert!(a.iter().any(|a| matches!(a, Action::SyncSlots(_))), "{a:?}");
    n.advance(ActionResult::SlotsSynced { existing: vec![], missing: missing.iter().map(|s| s.to_string()).collect() });
}

#[test]
fn replica_restarts_to_copy_missing_logical_slots_at_most_once_a_minute_per_slot() {
    let c = with_cdc_slot(cluster(Some("n2")), &[("cdc", 900)], &[]);
    let l = replica(Some(5002), 1000);
    let mut n = HaNode::new(settings());
    report_missing(&mut n, &obs(0, &c, &l), &["cdc"]);
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
    report_missing(&mut n, &obs(30_000, &c, &l), &["cdc"]);
    assert!(!decide(&mut n, &obs(30_000, &c, &l)).iter().any(|a| matches!(a, Action::StartJob(_))));
    // A slot configured since then is copied at once (with the other one).
    report_missing(&mut n, &obs(30_500, &c, &l), &["cdc", "cdc2"]);
    assert_eq!(
        decide(&mut n, &obs(31_000, &c, &l)),
        vec![Action::StartJob(Job::CopyLogicalSlots {
            from: up("n2", 5002),
            upstream: up("n2", 5002),
            slots: vec!["cdc".into(), "cdc2".into()]
        })]
    );
    report_missing(&mut n, &obs(61_000, &c, &l), &["cdc"]);
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
    let l = replica(Some(5003), 1000);
    report_missing(&mut n, &obs(0, &c, &l), &["cdc"]);
    assert_eq!(
        decide(&mut n, &obs(0, &c, &l)),
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
    let l = replica(Some(5003), 1000);
    report_missing(&mut n, &obs(0, &c, &l), &["cdc"]);
    let a = decide(&mut n, &obs(0, &c, &l));
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
pub(super) fn slot_targets_of(actions: &[Action]) -> crate::slots::SlotTargets {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SyncSlots(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no slot sync in {actions:?}"))
}

pub(super) fn with_member_slots_ttl(mut c: Cluster, ttl: serde_json::Value) -> Cluster {
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

#[test]
fn the_leader_publishes_in_status_the_positions_its_last_slot_sync_read() {
    let status_of = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::WriteStatus(s) => Some(s.clone()),
            _ => None,
        })
    };
    // A key from before our last write, so that the first cycle has something to publish.
    let c = Cluster { status: Status::default(), ..cluster(Some(ME)) };
    let l = primary();
    let mut n = HaNode::new(settings());
    // Before any slot sync the status carries the key's slots (none here) and our position.
    let first = decide(&mut n, &obs(0, &c, &l));
    assert_eq!(status_of(&first), Some(Status { optime: 1000, ..Default::default() }));
    n.advance(ActionResult::SlotsSynced { existing: vec![have("n2", 700), have("n3", 800)], missing: vec![] });
    let second = decide(&mut n, &obs(10_000, &c, &l));
    let published = status_of(&second).expect("a status write");
    assert_eq!(published.optime, 1000);
    let want: BTreeMap<String, u64> = [("n1".into(), 1000), ("n2".into(), 700), ("n3".into(), 800)].into();
    assert_eq!(published.slots, want, "the others' slots as read, ours at the flush position");
    assert_eq!(published.retain_slots, ["n1", "n2", "n3"].map(String::from).to_vec());
    // A failsafe round announces the same slots, at the positions read at that moment.
    assert_eq!(n.failsafe_slots(None, 1000), want);
    let now: BTreeMap<String, u64> = [("n1".into(), 1100), ("n2".into(), 990), ("n3".into(), 800)].into();
    assert_eq!(n.failsafe_slots(Some(&[have("n2", 990), have("n3", 800)]), 1100), now);
    // Once a replica, nothing of that is published any more.
    let mut demoted = HaNode::new(settings());
    decide(&mut demoted, &obs(0, &c, &l));
    demoted.advance(ActionResult::SlotsSynced { existing: vec![have("n2", 700)], missing: vec![] });
    decide(&mut demoted, &obs(1_000, &cluster(Some("n2")), &replica(Some(5002), 1000)));
    demoted.advance(ActionResult::SlotsSynced { existing: vec![], missing: vec![] });
    assert!(demoted.failsafe_slots(None, 0).is_empty());
}

#[test]
fn a_wal_move_costs_one_status_write_as_the_probe_reads_slots_and_position_together() {
    let status_writes = |actions: &[Action]| {
        actions.iter().filter_map(|a| if let Action::WriteStatus(s) = a { Some(s.clone()) } else { None }).collect()
    };
    // A primary whose probe lists its slots beside its flush position.
    let at = |flush: u64, n2: u64, n3: u64| {
        let mut l = primary();
        if let PgProcess::Running(r) = &mut l.process {
            r.wal.flush = Some(Lsn(flush));
            r.slots = Some(vec![have("n2", n2), have("n3", n3)]);
        }
        l
    };
    let mut c = cluster(Some(ME));
    let mut n = HaNode::new(settings());
    decide(&mut n, &obs(0, &c, &at(1000, 1000, 1000)));
    n.advance(ActionResult::SlotsSynced { existing: vec![have("n2", 1000), have("n3", 1000)], missing: vec![] });
    let settled: Vec<Status> = status_writes(&decide(&mut n, &obs(1_000, &c, &at(1000, 1000, 1000))));
    c.status = settled.last().cloned().unwrap_or(c.status);

    // The WAL moves and both replicas confirm it before the next probe: one write says it all.
    let moved = at(1500, 1500, 1500);
    let first: Vec<Status> = status_writes(&decide(&mut n, &obs(2_000, &c, &moved)));
    let want: BTreeMap<String, u64> = [("n1".into(), 1500), ("n2".into(), 1500), ("n3".into(), 1500)].into();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].optime, &first[0].slots), (1500, &want), "position and slots of one reading");
    c.status = first[0].clone();
    // That cycle's slot sync reads the same; the next cycle has nothing to add.
    n.advance(ActionResult::SlotsSynced { existing: vec![have("n2", 1500), have("n3", 1500)], missing: vec![] });
    let second: Vec<Status> = status_writes(&decide(&mut n, &obs(3_000, &c, &moved)));
    assert!(second.is_empty(), "a second write for the same move: {second:?}");
}
