//! Replication slots as Patroni keeps them: which slots a member should have (member slots and
//! the permanent `slots` of the dynamic configuration), and the steps that bring the slots it has
//! there. Pure: the driver lists the local slots, calls [`reconcile`] and runs the steps.
//!
//! As in Patroni 4 (with `member_slots_ttl` > 0, the default), the leader keeps a physical slot for
//! every other member that streams (not `nostream`), moving the idle slot of a member that streams
//! from another replica to the position that member reports, and creates the permanent slots.
//! Each replica keeps the same physical slots (except its own) and the permanent ones, advanced to
//! the positions the leader published in `status.slots`, so that after a failover every surviving
//! replica and every logical consumer finds its slot on the new primary. A member that may never
//! lead keeps only the slots of members streaming from it.
//!
//! Invariants:
//! * a slot is dropped only when Rampart manages it: it is wanted with another type, or the
//!   leader published it earlier (`status.retain_slots` or `status.slots`) and it is no longer
//!   wanted. Active slots and slots matched by `ignore_slots` are never dropped; a slot an
//!   operator created by hand is never touched;
//! * on a replica a slot only moves forward, never past the position the leader published for
//!   it (for a logical slot: what its consumer confirmed on the primary) and never past what this
//!   replica has replayed;
//! * a logical slot is never created on a replica (PostgreSQL 15 cannot decode in recovery): a
//!   missing one is reported for copying from the leader, and only when the leader has it;
//! * a physical slot nobody should stream through here ([`SlotTargets::idle`]) that still holds
//!   an `xmin` (left by a standby's `hot_standby_feedback` while it streamed through it) is
//!   dropped and made again: nothing would ever move that `xmin`, so it would hold back vacuum
//!   here and, through this replica's feedback, on the primary (Patroni does the same).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The slot name Patroni derives from a member name (`slot_name_from_member_name`): lower case,
/// every character outside `[a-z0-9_]` replaced by `_`, at most 63 bytes.
pub fn slot_name_from_member_name(member: &str) -> String {
    member
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '_' })
        .take(63)
        .collect()
}

/// Whether PostgreSQL accepts `name` as a slot name (`ReplicationSlotValidateName`).
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// What a slot is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A physical slot (a standby streams through it).
    Physical,
    /// A logical slot of one database, decoded by one output plugin.
    Logical {
        /// Database it belongs to.
        database: String,
        /// Output plugin (`pgoutput`, `test_decoding`, ...).
        plugin: String,
    },
}

/// One `ignore_slots` rule: a slot matches when every attribute given matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoreSlot {
    /// Slot name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `physical` or `logical`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Database (logical slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Output plugin (logical slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

impl IgnoreSlot {
    /// Whether this rule covers the slot `name` of kind `kind`.
    pub fn matches(&self, name: &str, kind: &SlotKind) -> bool {
        let (t, db, plugin) = match kind {
            SlotKind::Physical => ("physical", None, None),
            SlotKind::Logical { database, plugin } => ("logical", Some(database.as_str()), Some(plugin.as_str())),
        };
        let ok = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
        ok(&self.name, Some(name)) && ok(&self.kind, Some(t)) && ok(&self.database, db) && ok(&self.plugin, plugin)
    }
}

/// The slots a member should have, as the core decided them (carried by the sync-slots action).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTargets {
    /// This member is the running primary (creates everything, publishes positions); otherwise a
    /// replica (creates physical slots, advances, copies logical slots).
    pub primary: bool,
    /// Wanted slots by name.
    pub wanted: BTreeMap<String, SlotKind>,
    /// Replica: the leader's published positions (`status.slots`). Leader: the positions the
    /// members that stream from another member report, for their slots here.
    pub positions: BTreeMap<String, u64>,
    /// Slots the leader published earlier (`status.retain_slots` and `status.slots`): the only
    /// unwanted slots that may be dropped.
    pub managed: BTreeSet<String>,
    /// `ignore_slots`: never dropped, never touched.
    pub ignore: Vec<IgnoreSlot>,
    /// Leader: the member slot names to publish as `status.retain_slots` (present members and
    /// those that left less than `member_slots_ttl` ago).
    pub retain: Vec<String>,
    /// Wanted physical slots that no standby is expected to stream through here (Patroni's
    /// `expected_active: False`); empty while the cluster has no leader, or while this member
    /// holds the lock but is still in recovery. An idle one holding an `xmin` is replaced.
    pub idle: BTreeSet<String>,
}

/// A slot that exists on the local server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingSlot {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: SlotKind,
    /// A walsender or a decoding session uses it.
    pub active: bool,
    /// Logical: `confirmed_flush_lsn`; physical: `restart_lsn`.
    pub position: Option<u64>,
    /// It holds an `xmin` (a physical slot a standby with `hot_standby_feedback` streamed through).
    pub holds_xmin: bool,
}

/// Moving a slot forward on a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advance {
    /// Slot name.
    pub name: String,
    /// Database of a logical slot (the advance must run connected to it).
    pub database: Option<String>,
    /// Target position.
    pub to: u64,
}

/// What to do, in this order: drop, create, advance; then copy (which needs a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotSteps {
    /// Slots to drop.
    pub drop: Vec<String>,
    /// Slots to create.
    pub create: Vec<(String, SlotKind)>,
    /// Slots to move forward (replica).
    pub advance: Vec<Advance>,
    /// Logical slots to copy from the leader (replica).
    pub copy: Vec<String>,
}

/// The steps that bring `existing` to `targets`. `replayed` is the replica's replay position.
pub fn reconcile(targets: &SlotTargets, existing: &[ExistingSlot], replayed: Option<u64>) -> SlotSteps {
    let mut steps = SlotSteps::default();
    let ignored = |name: &str, kind: &SlotKind| targets.ignore.iter().any(|r| r.matches(name, kind));
    for e in existing {
        if ignored(&e.name, &e.kind) {
            continue;
        }
        match targets.wanted.get(&e.name) {
            Some(kind) if *kind != e.kind => {
                // The configuration asks for another slot under this name: replace it once nobody
                // uses it (it is created again next cycle).
                if !e.active {
                    steps.drop.push(e.name.clone());
                }
            }
            Some(kind)
                if *kind == SlotKind::Physical && !e.active && e.holds_xmin && targets.idle.contains(&e.name) =>
            {
                // Nothing streams through it, so nothing will ever move its xmin: replace it
                // (created again next cycle, without one).
                steps.drop.push(e.name.clone());
            }
            Some(kind) => {
                // The primary moves only the idle physical slots of members that stream from
                // another member (their positions come from their member keys).
                if targets.primary && (e.active || *kind != SlotKind::Physical) {
                    continue;
                }
                let (Some(at), Some(&published)) = (e.position, targets.positions.get(&e.name)) else { continue };
                // Only WAL a replica has replayed can be decoded or kept by the slot. (A promoted
                // primary still reports where its replay stopped: no limit there.)
                let to = match replayed {
                    Some(r) if !targets.primary => published.min(r),
                    _ => published,
                };
                if to > at {
                    let database = match kind {
                        SlotKind::Logical { database, .. } => Some(database.clone()),
                        SlotKind::Physical => None,
                    };
                    steps.advance.push(Advance { name: e.name.clone(), database, to });
                }
            }
            None => {
                if targets.managed.contains(&e.name) && !e.active {
                    steps.drop.push(e.name.clone());
                }
            }
        }
    }
    for (name, kind) in &targets.wanted {
        if existing.iter().any(|e| &e.name == name) || ignored(name, kind) {
            continue;
        }
        match kind {
            SlotKind::Logical { .. } if !targets.primary => {
                if targets.positions.contains_key(name) {
                    steps.copy.push(name.clone());
                }
            }
            _ => steps.create.push((name.clone(), kind.clone())),
        }
    }
    steps
}

/// What the leader publishes in `status`: the positions of the wanted slots it has (logical:
/// confirmed flush, physical: restart LSN) plus its own member slot at its flush position, so
/// that replicas keep WAL for it too; and the member slots to retain ([`SlotTargets::retain`]).
pub fn published(
    targets: &SlotTargets,
    existing: &[ExistingSlot],
    me: &str,
    flush: u64,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut slots: BTreeMap<String, u64> = existing
        .iter()
        .filter(|e| targets.wanted.get(&e.name) == Some(&e.kind))
        .filter_map(|e| e.position.map(|p| (e.name.clone(), p)))
        .collect();
    let own = slot_name_from_member_name(me);
    slots.insert(own, flush);
    (slots, targets.retain.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(db: &str, plugin: &str) -> SlotKind {
        SlotKind::Logical { database: db.into(), plugin: plugin.into() }
    }
    fn have(name: &str, kind: SlotKind, active: bool, position: Option<u64>) -> ExistingSlot {
        ExistingSlot { name: name.into(), kind, active, position, holds_xmin: false }
    }
    fn targets(primary: bool, wanted: &[(&str, SlotKind)]) -> SlotTargets {
        SlotTargets {
            primary,
            wanted: wanted.iter().map(|(n, k)| (n.to_string(), k.clone())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn member_names_become_slot_names_as_in_patroni() {
        assert_eq!(slot_name_from_member_name("Node-1.dc"), "node_1_dc");
        assert_eq!(slot_name_from_member_name("pg_ok_9"), "pg_ok_9");
        assert_eq!(slot_name_from_member_name(&"x".repeat(80)).len(), 63);
        assert!(is_valid_slot_name("cdc_1"));
        assert!(!is_valid_slot_name("CDC") && !is_valid_slot_name("") && !is_valid_slot_name("a-b"));
    }

    #[test]
    fn leader_creates_what_is_missing_and_drops_only_what_it_manages() {
        let mut t = targets(true, &[("n2", SlotKind::Physical), ("cdc", logical("app", "pgoutput"))]);
        t.managed = ["n2", "n3", "n4"].iter().map(|s| s.to_string()).collect();
        let existing = [
            have("n3", SlotKind::Physical, false, Some(10)), // a member that left: dropped
            have("n4", SlotKind::Physical, true, Some(10)),  // left but still streaming: kept
            have("backup_tool", SlotKind::Physical, false, Some(5)), // not ours: kept
        ];
        let s = reconcile(&t, &existing, None);
        assert_eq!(s.drop, vec!["n3".to_string()]);
        assert_eq!(s.create, vec![("cdc".into(), logical("app", "pgoutput")), ("n2".into(), SlotKind::Physical)]);
        assert!(s.advance.is_empty() && s.copy.is_empty(), "a primary neither advances nor copies");
    }

    #[test]
    fn a_slot_of_the_wrong_type_is_replaced_and_ignored_slots_are_left_alone() {
        let mut t = targets(true, &[("cdc", logical("app", "pgoutput")), ("keep", SlotKind::Physical)]);
        t.managed.insert("old".into());
        t.ignore = vec![IgnoreSlot { name: Some("old".into()), ..Default::default() }];
        let existing = [
            have("cdc", logical("app", "test_decoding"), false, Some(1)),
            have("old", SlotKind::Physical, false, Some(1)),
            have("keep", logical("app", "pgoutput"), true, Some(1)),
        ];
        let s = reconcile(&t, &existing, None);
        assert_eq!(s.drop, vec!["cdc".to_string()], "wrong plugin replaced; active one waits; ignored kept");
        assert!(s.create.is_empty(), "recreated on the next cycle, once the old one is gone");
    }

    #[test]
    fn replica_advances_within_the_published_and_replayed_positions() {
        let mut t =
            targets(false, &[("n1", SlotKind::Physical), ("n3", SlotKind::Physical), ("cdc", logical("app", "x"))]);
        t.positions = [("n1".to_string(), 500), ("n3".to_string(), 300), ("cdc".to_string(), 250)].into();
        let existing = [
            have("n1", SlotKind::Physical, false, Some(100)),
            have("n3", SlotKind::Physical, false, Some(300)),
            have("cdc", logical("app", "x"), false, Some(200)),
        ];
        let s = reconcile(&t, &existing, Some(400));
        assert_eq!(
            s.advance,
            vec![
                Advance { name: "n1".into(), database: None, to: 400 },
                Advance { name: "cdc".into(), database: Some("app".into()), to: 250 },
            ],
            "n1 only up to our replay position, n3 already there, cdc only to what the primary confirmed"
        );
        let behind = reconcile(&t, &existing, Some(150));
        assert_eq!(behind.advance, vec![Advance { name: "n1".into(), database: None, to: 150 }], "never backwards");
    }

    #[test]
    fn a_promoted_primary_moves_a_cascading_members_slot_past_where_its_replay_stopped() {
        let mut t = targets(true, &[("n3", SlotKind::Physical)]);
        t.positions = [("n3".to_string(), 900)].into();
        let existing = [have("n3", SlotKind::Physical, false, Some(100))];
        assert_eq!(
            reconcile(&t, &existing, Some(400)).advance,
            vec![Advance { name: "n3".into(), database: None, to: 900 }]
        );
    }

    #[test]
    fn replica_copies_a_missing_logical_slot_only_when_the_leader_has_it() {
        let mut t = targets(false, &[("cdc", logical("app", "x")), ("n1", SlotKind::Physical)]);
        let s = reconcile(&t, &[], Some(10));
        assert_eq!(s.create, vec![("n1".into(), SlotKind::Physical)]);
        assert!(s.copy.is_empty(), "the leader has not published the logical slot yet");
        t.positions.insert("cdc".into(), 5);
        assert_eq!(reconcile(&t, &[], Some(10)).copy, vec!["cdc".to_string()]);
    }

    #[test]
    fn an_idle_physical_slot_holding_an_xmin_is_replaced() {
        let mut t =
            targets(false, &[("n1", SlotKind::Physical), ("n3", SlotKind::Physical), ("perm", SlotKind::Physical)]);
        t.idle = ["n1".to_string(), "perm".to_string()].into();
        t.positions = [("n1".to_string(), 500), ("perm".to_string(), 500)].into();
        let with_xmin = |name: &str, active: bool| ExistingSlot {
            holds_xmin: true,
            ..have(name, SlotKind::Physical, active, Some(100))
        };
        let existing = [with_xmin("n1", false), with_xmin("n3", false), with_xmin("perm", true)];
        let s = reconcile(&t, &existing, Some(400));
        assert_eq!(s.drop, vec!["n1".to_string()], "n3 may be streamed through here; perm is in use");
        assert!(s.create.is_empty(), "created again on the next cycle, once gone");
        let without = [have("n1", SlotKind::Physical, false, Some(100))];
        assert!(reconcile(&t, &without, Some(400)).drop.is_empty(), "no xmin: kept and advanced");
    }

    #[test]
    fn ignore_rules_match_on_every_given_attribute() {
        let r = IgnoreSlot { kind: Some("logical".into()), database: Some("app".into()), ..Default::default() };
        assert!(r.matches("any", &logical("app", "pgoutput")));
        assert!(!r.matches("any", &logical("other", "pgoutput")));
        assert!(!r.matches("any", &SlotKind::Physical));
    }

    #[test]
    fn leader_publishes_positions_of_its_wanted_slots_and_its_own() {
        let mut t = targets(true, &[("n2", SlotKind::Physical), ("cdc", logical("app", "x"))]);
        t.retain = vec!["n1".into(), "n2".into(), "n3".into()];
        let existing = [
            have("n2", SlotKind::Physical, true, Some(70)),
            have("cdc", logical("app", "x"), false, Some(60)),
            have("manual", SlotKind::Physical, false, Some(1)),
        ];
        let (slots, retain) = published(&t, &existing, "N1", 90);
        assert_eq!(slots, [("cdc".to_string(), 60), ("n1".to_string(), 90), ("n2".to_string(), 70)].into());
        assert_eq!(retain, vec!["n1".to_string(), "n2".into(), "n3".into()]);
    }
}
