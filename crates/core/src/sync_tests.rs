//! Tests of the leader's synchronous replication step: table tests of single cycles, then a
//! property test that drives many cycles against a toy primary and checks, after every action,
//! that the `sync` key names only standbys the setting in force lists and that at most `quorum`
//! voters lack any acknowledged commit.

use super::*;
use crate::model::{Member, MemberData, Tags};
use crate::observe::WalPositions;

const ME: &str = "p";

fn member(name: &str, tags: Tags) -> Member {
    Member {
        name: name.into(),
        data: MemberData { state: "running".into(), role: "replica".into(), tags, ..Default::default() },
        lease: 1,
    }
}

fn config(mode: SyncMode, count: u32, strict: bool) -> DynamicConfig {
    DynamicConfig {
        synchronous_mode: Some(mode),
        synchronous_node_count: Some(count),
        synchronous_mode_strict: Some(strict),
        ..Default::default()
    }
}

/// A cluster of `p` plus `names`, with the `sync` key `key` (leader, voters, quorum).
fn cluster(names: &[&str], key: Option<(&str, &[&str], usize)>) -> Cluster {
    let mut members = vec![member(ME, Tags::default())];
    members.extend(names.iter().map(|n| member(n, Tags::default())));
    let sync = key.map(|(l, v, q)| SyncState::new(l, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), q));
    Cluster { sync_revision: if sync.is_some() { 7 } else { 0 }, sync, members, ..Default::default() }
}

/// A walsender streaming `name` at `flush`, judged `sync_state`.
fn ws(name: &str, sync_state: &str, flush: u64) -> Walsender {
    Walsender {
        application_name: name.into(),
        state: "streaming".into(),
        sync_state: sync_state.into(),
        write: Some(Lsn(flush)),
        flush: Some(Lsn(flush)),
        replay: Some(Lsn(flush)),
    }
}

fn primary(ssn: &str, walsenders: Vec<Walsender>) -> RunningPg {
    RunningPg {
        in_recovery: false,
        timeline: 1,
        wal: WalPositions { flush: Some(Lsn(1000)), ..Default::default() },
        walsenders,
        synchronous_standby_names: ssn.into(),
        ..Default::default()
    }
}

fn mark(ssn: &str, flush: u64) -> SyncMark {
    SyncMark { names: ssn.into(), flush: Lsn(flush), seen_at: Millis(0) }
}

fn step(cfg: &DynamicConfig, c: &Cluster, pg: &RunningPg, m: Option<&SyncMark>) -> SyncPlan {
    leader_step(&LeaderSync { me: ME, config: cfg, cluster: c, pg, mark: m, now: Millis(5_000) })
}

fn write(voters: &[&str], q: usize, rev: i64) -> Action {
    let v: Vec<String> = voters.iter().map(|s| s.to_string()).collect();
    Action::WriteSync { state: SyncState::new(ME, &v, q), expected_revision: rev }
}

fn set(s: &str) -> Action {
    Action::SetSynchronousStandbyNames(s.into())
}

#[test]
fn mode_on_names_a_standby_first_and_writes_it_into_the_key_a_cycle_later() {
    let cfg = config(SyncMode::On, 1, false);
    let c = cluster(&["a", "b"], None);
    // Cycle 1: no key yet; claim it (empty) and start waiting for `a`.
    let pg = primary("", vec![ws("a", "async", 1000), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, None).actions, vec![write(&[], 0, 0), set("FIRST 1 (\"a\")")]);
    // Cycle 2: PostgreSQL reports `a` as sync and caught up with the mark: now the key.
    let c = cluster(&["a", "b"], Some((ME, &[], 0)));
    let names = "FIRST 1 (\"a\")";
    let pg = primary(names, vec![ws("a", "sync", 1000), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![write(&["a"], 0, 7)]);
    // Steady state: nothing to do.
    let c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![]);
}

#[test]
fn a_standby_behind_the_mark_is_not_confirmed_yet() {
    let cfg = config(SyncMode::On, 1, false);
    let c = cluster(&["a"], Some((ME, &[], 0)));
    let names = "FIRST 1 (\"a\")";
    let pg = primary(names, vec![ws("a", "sync", 800)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![]);
    // A mark taken now (no remembered one) is the primary's position: 800 < 1000 either way.
    let p = step(&cfg, &c, &pg, None);
    assert_eq!(p.actions, vec![]);
    assert_eq!(p.mark, Some(SyncMark { names: names.into(), flush: Lsn(1000), seen_at: Millis(5_000) }));
}

#[test]
fn a_departed_standby_leaves_the_key_before_the_setting() {
    let cfg = config(SyncMode::On, 1, false);
    let c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    let names = "FIRST 1 (\"a\")";
    let pg = primary(names, vec![ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![write(&[], 0, 7), set("FIRST 1 (\"b\")")]);
}

#[test]
fn swapping_for_a_preferred_standby_keeps_the_old_one_until_the_new_one_is_confirmed() {
    let cfg = config(SyncMode::On, 1, false);
    let mut c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    c.members[2].data.tags.sync_priority = Some(5.into());
    let names = "FIRST 1 (\"a\")";
    let pg = primary(names, vec![ws("a", "sync", 1000), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![set("FIRST 2 (\"b\",\"a\")")]);
    let names = "FIRST 2 (\"b\",\"a\")";
    let pg = primary(names, vec![ws("a", "sync", 1000), ws("b", "sync", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![write(&["b"], 0, 7), set("FIRST 1 (\"b\")")]);
}

#[test]
fn nosync_and_sync_priority_zero_are_never_listed() {
    let cfg = config(SyncMode::On, 2, false);
    let mut c = cluster(&["a", "b", "c"], Some((ME, &[], 0)));
    c.members[1].data.tags.nosync = Some(true);
    c.members[2].data.tags.sync_priority = Some(0.into());
    let pg = primary("", vec![ws("a", "async", 1000), ws("b", "async", 1000), ws("c", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, None).actions, vec![set("FIRST 1 (\"c\")")]);
}

#[test]
fn a_standby_over_maximum_lag_on_syncnode_is_replaced() {
    let mut cfg = config(SyncMode::On, 1, false);
    cfg.maximum_lag_on_syncnode = Some(100);
    let c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    let names = "FIRST 1 (\"a\")";
    let pg = primary(names, vec![ws("a", "sync", 500), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 400))).actions, vec![write(&[], 0, 7), set("FIRST 1 (\"b\")")]);
    cfg.maximum_lag_on_syncnode = Some(-1);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 400))).actions, vec![], "off: sticks to a");
}

#[test]
fn non_strict_falls_back_to_async_when_no_standby_is_left() {
    let cfg = config(SyncMode::On, 1, false);
    let c = cluster(&["a"], Some((ME, &["a"], 0)));
    let names = "FIRST 1 (\"a\")";
    let pg = primary(names, vec![]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 900))).actions, vec![write(&[], 0, 7), set("")]);
}

#[test]
fn strict_never_falls_back_to_async() {
    let cfg = config(SyncMode::On, 1, true);
    // The last synchronous standby left: keep waiting for it, keep it in the key.
    let c = cluster(&["a"], Some((ME, &["a"], 0)));
    let names = "FIRST 1 (\"a\")";
    assert_eq!(step(&cfg, &c, &primary(names, vec![]), Some(&mark(names, 900))).actions, vec![]);
    // Nobody was ever synchronous: wait for any standby, with Patroni's `*`.
    let c = cluster(&["a"], Some((ME, &[], 0)));
    assert_eq!(step(&cfg, &c, &primary("", vec![]), None).actions, vec![set("*")]);
    assert_eq!(step(&cfg, &c, &primary("*", vec![]), None).actions, vec![], "and keeps it");
    // Quorum mode keeps the voters with `ANY |V| - q`.
    let q = config(SyncMode::Quorum, 1, true);
    let c = cluster(&["a", "b"], Some((ME, &["a", "b"], 1)));
    let names = "ANY 1 (\"a\",\"b\")";
    assert_eq!(step(&q, &c, &primary(names, vec![]), Some(&mark(names, 900))).actions, vec![]);
}

#[test]
fn strict_mode_with_no_standby_sets_star_as_patroni_does() {
    assert_eq!(strict_without_standby(SyncMode::On), "*");
    assert_eq!(strict_without_standby(SyncMode::Quorum), "ANY 1 (*)");
    let q = config(SyncMode::Quorum, 1, true);
    let c = cluster(&["a"], Some((ME, &[], 0)));
    assert_eq!(step(&q, &c, &primary("", vec![]), None).actions, vec![set("ANY 1 (*)")]);
    // A standby that connects under `*` is named, and a voter only once confirmed by name.
    let cfg = config(SyncMode::On, 1, true);
    let pg = primary("*", vec![ws("a", "sync", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark("*", 900))).actions, vec![set("FIRST 1 (\"a\")")]);
}

#[test]
fn the_sync_lag_is_measured_where_commits_wait() {
    assert_eq!(AckPoint::of("remote_apply"), AckPoint::Replay);
    assert_eq!(AckPoint::of("remote_write"), AckPoint::Write);
    for flush in ["on", "local", "off", ""] {
        assert_eq!(AckPoint::of(flush), AckPoint::Flush, "{flush:?}");
    }
    let w = Walsender { write: Some(Lsn(30)), flush: Some(Lsn(20)), replay: Some(Lsn(10)), ..Default::default() };
    let at = |p: AckPoint| p.position(&w);
    assert_eq!(
        (at(AckPoint::Write), at(AckPoint::Flush), at(AckPoint::Replay)),
        (Some(Lsn(30)), Some(Lsn(20)), Some(Lsn(10)))
    );
}

#[test]
fn a_standby_with_paused_replay_stops_being_synchronous_under_remote_apply() {
    let mut cfg = config(SyncMode::On, 1, false);
    cfg.maximum_lag_on_syncnode = Some(100);
    let c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    let names = "FIRST 1 (\"a\")";
    // a flushes everything but replays nothing more (replay paused); b is all caught up.
    let paused = Walsender { replay: Some(Lsn(500)), ..ws("a", "sync", 1000) };
    let mut pg = primary(names, vec![paused, ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(names, 400))).actions, vec![], "flush lag: a stays");
    pg.commit_waits_for = AckPoint::of("remote_apply");
    assert_eq!(
        step(&cfg, &c, &pg, Some(&mark(names, 400))).actions,
        vec![write(&[], 0, 7), set("FIRST 1 (\"b\")")],
        "replay lag: a is replaced"
    );
}

#[test]
fn quorum_story_any_two_of_two_then_one_then_two_again() {
    let cfg = config(SyncMode::Quorum, 2, false);
    let c = cluster(&["a", "b"], Some((ME, &[], 0)));
    let pg = primary("", vec![ws("a", "async", 1000), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, None).actions, vec![set("ANY 2 (\"a\",\"b\")")]);
    let two = "ANY 2 (\"a\",\"b\")";
    let pg = primary(two, vec![ws("a", "quorum", 1000), ws("b", "quorum", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(two, 1000))).actions, vec![write(&["a", "b"], 0, 7)]);
    // b stops: key first (quorum 0 still: both held every commit), then ANY 1 (a).
    let c = cluster(&["a", "b"], Some((ME, &["a", "b"], 0)));
    let pg = primary(two, vec![ws("a", "quorum", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(two, 1000))).actions, vec![write(&["a"], 0, 7), set("ANY 1 (\"a\")")]);
    // b is back: named first, voter a cycle later.
    let one = "ANY 1 (\"a\")";
    let c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    let pg = primary(one, vec![ws("a", "quorum", 1000), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(one, 1000))).actions, vec![set(two)]);
}

#[test]
fn quorum_one_of_three_needs_two_more_voters_and_shrinks_safely() {
    let cfg = config(SyncMode::Quorum, 1, false);
    let c = cluster(&["a", "b", "c"], Some((ME, &["a", "b", "c"], 2)));
    let all = "ANY 1 (\"a\",\"b\",\"c\")";
    let pg = primary(all, vec![ws("a", "quorum", 1000), ws("b", "quorum", 1000), ws("c", "quorum", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(all, 1000))).actions, vec![], "steady: q = |V| - k = 2");
    // c leaves. A commit may have been acknowledged by c alone, so neither a nor b may be
    // promoted on its own until both have caught up under the new setting: quorum 2 of 2.
    let pg = primary(all, vec![ws("a", "quorum", 1000), ws("b", "quorum", 1000)]);
    assert_eq!(
        step(&cfg, &c, &pg, Some(&mark(all, 1000))).actions,
        vec![write(&["a", "b"], 2, 7), set("ANY 1 (\"a\",\"b\")")]
    );
    let ab = "ANY 1 (\"a\",\"b\")";
    let c = cluster(&["a", "b", "c"], Some((ME, &["a", "b"], 2)));
    let behind = primary(ab, vec![ws("a", "quorum", 990), ws("b", "quorum", 990)]);
    assert_eq!(step(&cfg, &c, &behind, Some(&mark(ab, 1000))).actions, vec![]);
    let caught_up = primary(ab, vec![ws("a", "quorum", 1000), ws("b", "quorum", 1000)]);
    assert_eq!(step(&cfg, &c, &caught_up, Some(&mark(ab, 1000))).actions, vec![write(&["a", "b"], 1, 7)]);
}

#[test]
fn quorum_adding_a_member_at_the_wanted_count_raises_the_count_meanwhile() {
    // ANY 1 (a) with b arriving: ANY 2 (a,b) keeps "a has every commit" true while b is not a
    // voter; once b is confirmed, both become voters with quorum 1 and the count goes back to 1.
    let cfg = config(SyncMode::Quorum, 1, false);
    let c = cluster(&["a", "b"], Some((ME, &["a"], 0)));
    let one = "ANY 1 (\"a\")";
    let pg = primary(one, vec![ws("a", "quorum", 1000), ws("b", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, Some(&mark(one, 1000))).actions, vec![set("ANY 2 (\"a\",\"b\")")]);
    let two = "ANY 2 (\"a\",\"b\")";
    let pg = primary(two, vec![ws("a", "quorum", 1000), ws("b", "quorum", 1000)]);
    assert_eq!(
        step(&cfg, &c, &pg, Some(&mark(two, 1000))).actions,
        vec![write(&["a", "b"], 1, 7), set("ANY 1 (\"a\",\"b\")")]
    );
}

#[test]
fn a_key_left_by_another_leader_is_claimed_empty_first() {
    let cfg = config(SyncMode::On, 1, false);
    let c = cluster(&["a", "old"], Some(("old", &["a"], 0)));
    let names = placeholder(SyncMode::On);
    let pg = primary(&names, vec![ws("a", "async", 1000)]);
    assert_eq!(step(&cfg, &c, &pg, None).actions, vec![write(&[], 0, 7), set("FIRST 1 (\"a\")")]);
}

#[test]
fn turning_synchronous_mode_off_deletes_the_key() {
    let cfg = config(SyncMode::Off, 1, false);
    let c = cluster(&["a"], Some((ME, &["a"], 0)));
    assert_eq!(
        step(&cfg, &c, &primary("FIRST 1 (\"a\")", vec![]), None).actions,
        vec![Action::DeleteSync { expected_revision: 7 }]
    );
    assert_eq!(step(&cfg, &cluster(&["a"], None), &primary("", vec![]), None).actions, vec![]);
}

#[test]
fn restoring_the_setting_from_the_key() {
    let on = config(SyncMode::On, 1, false);
    let q = config(SyncMode::Quorum, 1, false);
    let strict = config(SyncMode::On, 1, true);
    let c = cluster(&["a", "b"], Some((ME, &["a", "b"], 1)));
    assert_eq!(restore_names(ME, &on, &c), "FIRST 2 (\"a\",\"b\")");
    assert_eq!(restore_names(ME, &q, &c), "ANY 1 (\"a\",\"b\")");
    let empty = cluster(&["a"], Some((ME, &[], 0)));
    assert_eq!(restore_names(ME, &on, &empty), "");
    assert_eq!(restore_names(ME, &strict, &empty), "*");
    assert_eq!(restore_names(ME, &on, &cluster(&["a"], Some(("old", &["a"], 0)))), placeholder(SyncMode::On));
}

#[test]
fn the_lacking_bound() {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let a = |s: &str| Applied::read(s);
    assert_eq!(lacking_bound(&v(&["a", "b"]), &a("ANY 1 (a,b)")), 1);
    assert_eq!(lacking_bound(&v(&["a", "b"]), &a("ANY 2 (a,b)")), 0);
    assert_eq!(lacking_bound(&v(&["a", "b"]), &a("ANY 1 (a,b,c)")), 2, "c alone may acknowledge");
    assert_eq!(lacking_bound(&v(&["a"]), &a("ANY 2 (a,b)")), 0);
    assert_eq!(lacking_bound(&v(&["a"]), &a("")), 1, "async: nobody is sure to have anything");
    assert_eq!(lacking_bound(&v(&["a"]), &a("*")), 1);
    assert_eq!(lacking_bound(&v(&["a"]), &a(&placeholder(SyncMode::On))), 0, "nothing is acknowledged");
}

mod ordering {
    //! Many cycles of a leader against a toy primary whose standbys come and go and flush at
    //! their own pace, with lost compare-and-swaps. After every step: the key names only listed
    //! standbys, and at most `quorum` voters lack the newest acknowledged commit.

    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];

    struct Toy {
        /// Flushed position of each standby (kept while disconnected: the data stays there).
        flush: [u64; 4],
        connected: [bool; 4],
        primary: u64,
        /// The setting in force.
        ssn: String,
        key: Option<SyncState>,
        revision: i64,
        /// Newest acknowledged commit.
        acked: u64,
    }

    impl Toy {
        fn applied(&self) -> Option<StandbyNames> {
            StandbyNames::parse(&self.ssn).unwrap()
        }

        /// How far commits are acknowledged under the setting in force.
        fn ack(&mut self) {
            let frontier = match self.applied() {
                None => self.primary,
                Some(n) => {
                    // `*` lets any connected standby acknowledge.
                    let listed: Vec<u64> = (0..4)
                        .filter(|&i| n.has_star() || n.lists(NAMES[i]))
                        .filter(|&i| self.connected[i])
                        .map(|i| self.flush[i])
                        .collect();
                    if listed.len() < n.num {
                        0
                    } else if n.method == Method::First {
                        listed[..n.num].iter().copied().min().unwrap_or(0)
                    } else {
                        let mut l = listed.clone();
                        l.sort_unstable_by(|a, b| b.cmp(a));
                        l[n.num - 1]
                    }
                }
            };
            self.acked = self.acked.max(frontier.min(self.primary));
        }

        fn sync_state(&self, name: &str) -> String {
            match self.applied() {
                None => "async".into(),
                Some(n) if !n.lists(name) => "async".into(),
                Some(n) if n.method == Method::Any => "quorum".into(),
                Some(n) => {
                    let connected: Vec<&String> = n
                        .names
                        .iter()
                        .filter(|x| NAMES.iter().position(|m| m == x).is_some_and(|i| self.connected[i]))
                        .collect();
                    if connected.iter().take(n.num).any(|x| x.as_str() == name) {
                        "sync".into()
                    } else {
                        "potential".into()
                    }
                }
            }
        }

        fn check(&self) -> Result<(), String> {
            let Some(key) = &self.key else { return Ok(()) };
            let applied = self.applied();
            for v in key.voters() {
                if !applied.as_ref().is_some_and(|n| n.lists(&v)) {
                    return Err(format!("key names {v} but the setting in force is {:?}", self.ssn));
                }
            }
            let lacking = key
                .voters()
                .iter()
                .filter(|v| NAMES.iter().position(|m| m == &v.as_str()).is_some_and(|i| self.flush[i] < self.acked))
                .count();
            if lacking > key.quorum() {
                return Err(format!(
                    "{lacking} voters of {:?} lack commit {} but quorum is {} (setting {:?}, flush {:?})",
                    key.voters(),
                    self.acked,
                    key.quorum(),
                    self.ssn,
                    self.flush
                ));
            }
            Ok(())
        }
    }

    fn run(mode: SyncMode, count: u32, strict: bool, ops: &[(u8, u8)]) -> Result<(), String> {
        let cfg = config(mode, count, strict);
        let mut t = Toy {
            flush: [0; 4],
            connected: [true, true, false, false],
            primary: 0,
            ssn: String::new(),
            key: None,
            revision: 0,
            acked: 0,
        };
        let mut mark: Option<SyncMark> = None;
        for (i, &(op, arg)) in ops.iter().enumerate() {
            let who = (arg % 4) as usize;
            match op % 6 {
                0 => t.connected[who] = !t.connected[who],
                1 | 2 => t.primary += 1 + u64::from(arg),
                3 => {
                    if t.connected[who] {
                        t.flush[who] = t.flush[who].max(t.primary.saturating_sub(u64::from(arg % 3)));
                    }
                }
                _ => {
                    // Everyone connected catches up a little, then the leader runs a cycle.
                    for k in 0..4 {
                        if t.connected[k] && (arg >> k) & 1 == 1 {
                            t.flush[k] = t.primary;
                        }
                    }
                }
            }
            t.ack();
            t.check().map_err(|e| format!("op {i}: {e}"))?;
            if op % 6 < 4 {
                continue;
            }
            let members: Vec<Member> = std::iter::once(ME).chain(NAMES).map(|n| member(n, Tags::default())).collect();
            let c = Cluster { members, sync: t.key.clone(), sync_revision: t.revision, ..Default::default() };
            let walsenders: Vec<Walsender> =
                (0..4).filter(|&k| t.connected[k]).map(|k| ws(NAMES[k], &t.sync_state(NAMES[k]), t.flush[k])).collect();
            let mut pg = primary(&t.ssn, walsenders);
            pg.wal.flush = Some(Lsn(t.primary));
            let plan = leader_step(&LeaderSync {
                me: ME,
                config: &cfg,
                cluster: &c,
                pg: &pg,
                mark: mark.as_ref(),
                now: Millis(i as u64),
            });
            mark = plan.mark;
            for a in plan.actions {
                match a {
                    Action::WriteSync { state, expected_revision } => {
                        // Now and then another writer wins the compare-and-swap.
                        if expected_revision != t.revision || arg % 7 == 0 {
                            t.revision += 1;
                            break;
                        }
                        t.key = Some(state);
                        t.revision += 1;
                    }
                    Action::SetSynchronousStandbyNames(s) => t.ssn = s,
                    other => return Err(format!("unexpected action {other:?}")),
                }
                t.ack();
                t.check().map_err(|e| format!("op {i} after an action: {e}"))?;
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn key_only_names_listed_standbys_and_quorum_covers_every_acknowledged_commit(
            mode in prop_oneof![Just(SyncMode::On), Just(SyncMode::Quorum)],
            count in 1u32..4,
            strict in any::<bool>(),
            ops in proptest::collection::vec((any::<u8>(), any::<u8>()), 1..300),
        ) {
            if let Err(e) = run(mode, count, strict, &ops) {
                return Err(TestCaseError::fail(e));
            }
        }
    }

    #[test]
    fn converges_to_the_wanted_state_when_nothing_moves() {
        for (mode, count, want) in [
            (SyncMode::On, 2, "FIRST 2 (\"a\",\"b\")"),
            (SyncMode::Quorum, 2, "ANY 2 (\"a\",\"b\",\"c\")"),
            (SyncMode::Quorum, 1, "ANY 1 (\"a\",\"b\",\"c\")"),
        ] {
            let cfg = config(mode, count, false);
            let (mut key, mut rev, mut ssn, mut mark) = (None::<SyncState>, 0, String::new(), None);
            for i in 0..10 {
                let members: Vec<Member> = [ME, "a", "b", "c"].iter().map(|n| member(n, Tags::default())).collect();
                let c = Cluster { members, sync: key.clone(), sync_revision: rev, ..Default::default() };
                let st = |n: &str| match StandbyNames::parse(&ssn).unwrap() {
                    Some(s) if s.lists(n) => {
                        if mode == SyncMode::Quorum {
                            "quorum"
                        } else {
                            "sync"
                        }
                    }
                    _ => "async",
                };
                let pg = primary(&ssn, vec![ws("a", st("a"), 1000), ws("b", st("b"), 1000), ws("c", st("c"), 1000)]);
                let plan = leader_step(&LeaderSync {
                    me: ME,
                    config: &cfg,
                    cluster: &c,
                    pg: &pg,
                    mark: mark.as_ref(),
                    now: Millis(i),
                });
                mark = plan.mark;
                for a in plan.actions {
                    match a {
                        Action::WriteSync { state, .. } => {
                            key = Some(state);
                            rev += 1;
                        }
                        Action::SetSynchronousStandbyNames(s) => ssn = s,
                        _ => unreachable!(),
                    }
                }
            }
            assert_eq!(ssn, want);
            let key = key.unwrap();
            let n = StandbyNames::parse(want).unwrap().unwrap();
            assert_eq!(key.voters().len(), n.names.len(), "{mode:?}: {key:?}");
            assert_eq!(key.quorum(), n.names.len() - n.num, "{mode:?}");
        }
    }
}
