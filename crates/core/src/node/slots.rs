//! Slot bookkeeping: which replication slots this member should hold as leader or replica,
//! which idle ones are replaced, which member slots are retained for `member_slots_ttl`, and
//! when a replica copies the leader's logical slots; what the leader publishes of its slots in
//! `status` (and in a failsafe round), from what the last slot sync read.

use super::*;
use crate::model::Status;
use crate::slots::ExistingSlot;

impl HaNode {
    /// [`Action::SyncSlots`] to [`HaNode::slot_targets`], remembered until its result comes back.
    pub(super) fn sync_slots(&mut self, now: Millis, cluster: &Cluster, primary: bool) -> Action {
        let targets = self.slot_targets(now, cluster, primary);
        self.slots.issued = Some(targets.clone());
        Action::SyncSlots(targets)
    }

    /// [`Action::SyncSlots`] to [`HaNode::replica_slot_targets`], remembered likewise.
    pub(super) fn sync_replica_slots(&mut self, now: Millis, cluster: &Cluster) -> Action {
        let targets = self.replica_slot_targets(now, cluster);
        self.slots.issued = Some(targets.clone());
        Action::SyncSlots(targets)
    }

    /// [`ActionResult::SlotsSynced`]: a sync as primary is what `status` publishes next; a sync
    /// as replica ends that, and names the logical slots to copy.
    pub(super) fn slots_synced(&mut self, existing: Vec<ExistingSlot>, missing: Vec<String>) {
        let Some(targets) = self.slots.issued.take() else { return };
        if targets.primary {
            self.slots.last_primary_sync = Some((targets, existing));
        } else {
            self.slots.last_primary_sync = None;
            self.slots.slots_to_copy = missing;
        }
    }

    /// The leader's `status`: the key as read with our flush position, and the positions of
    /// the slots the last sync as primary kept ([`crate::slots::published`]; the key's own slots
    /// when there was none), as the probe listed them with that flush position (as the sync read
    /// them when the probe did not). One reading for both, as Patroni's cluster query: a WAL
    /// move then costs etcd one write, not one for the position and one for the slots that
    /// followed it a cycle later. `None` when the server shows no flush position. A standby
    /// leader (in recovery) publishes the furthest position it received or replayed, as
    /// Patroni's `last_operation` does, so that its replicas' lag is judged against it. `None` as
    /// well when the key already says all that.
    pub(super) fn status_to_write(&self, cluster: &Cluster, r: &RunningPg) -> Option<Status> {
        let flush = match r.in_recovery {
            true => Some(r.wal.best()).filter(|l| l.0 > 0)?.0,
            false => r.wal.flush?.0,
        };
        let mut status = cluster.status.clone();
        status.optime = flush;
        if let Some((targets, synced)) = &self.slots.last_primary_sync {
            let existing = r.slots.as_deref().unwrap_or(synced);
            (status.slots, status.retain_slots) = crate::slots::published(targets, existing, &self.s.name, flush);
        }
        // Written only when it changes, as Patroni does: an idle leader costs etcd no write.
        Some(status).filter(|s| *s != cluster.status)
    }

    /// The slots a failsafe round announces (Patroni sends them so that replicas can advance
    /// their copies while the DCS is away): those the last sync as primary kept, at the
    /// positions `existing` shows now, or at the positions that sync read when they could not
    /// be listed now.
    pub fn failsafe_slots(&self, existing: Option<&[ExistingSlot]>, flush: u64) -> BTreeMap<String, u64> {
        let Some((targets, last)) = &self.slots.last_primary_sync else { return BTreeMap::new() };
        crate::slots::published(targets, existing.unwrap_or(last), &self.s.name, flush).0
    }

    /// The slots this member should hold (see [`crate::slots`]): on the running primary a slot
    /// for each member streaming from it, elsewhere one for every other member; the slots of
    /// members that left less than `member_slots_ttl` ago; the permanent slots everywhere. Also
    /// records what the leader published as managed.
    pub(super) fn slot_targets(&mut self, now: Millis, cluster: &Cluster, primary: bool) -> SlotTargets {
        let status = &cluster.status;
        self.slots.slots_seen.extend(status.retain_slots.iter().chain(status.slots.keys()).cloned());
        let (permanent, ignore, member_ttl) =
            (self.config.permanent_slots(), self.config.ignore_slots(), self.config.member_slots_ttl());
        // A configuration we cannot read must not make its slots look unwanted: drop nothing.
        let readable = permanent.is_ok() && ignore.is_ok() && member_ttl.is_ok();
        let retaining = member_ttl.as_ref().map_or(DEFAULT_MEMBER_SLOTS_TTL, |t| *t) > 0;
        let me_nofailover = self.s.tags.nofailover();
        // Patroni's `_get_members_slots`: no slot for a member that does not stream (`nostream`).
        // While member slots are retained (member_slots_ttl > 0) every member has one everywhere,
        // so that whoever leads next has them, except that a member that may never lead keeps only
        // those of members streaming from it; otherwise the leader keeps the slots of members
        // streaming from it and a replica all others'.
        let others = cluster.members.iter().filter(|m| m.name != self.s.name && !m.data.tags.nostream);
        let members: Vec<&crate::model::Member> = if retaining {
            others
                .filter(|m| !me_nofailover || m.data.tags.replicatefrom.as_deref() == Some(self.s.name.as_str()))
                .collect()
        } else if primary {
            let streaming_here = self.other_members(cluster);
            others.filter(|m| streaming_here.contains(&m.name)).collect()
        } else {
            others.collect()
        };
        // Patroni's `_get_permanent_slots`: none on a member that may never lead; only the
        // physical ones where WAL does not stream from the primary (no feedback keeps a logical
        // slot safe there).
        let mut wanted: BTreeMap<String, SlotKind> = if me_nofailover {
            BTreeMap::new()
        } else if self.streams_from_nowhere(cluster) {
            permanent.clone().unwrap_or_default().into_iter().filter(|(_, k)| *k == SlotKind::Physical).collect()
        } else {
            permanent.clone().unwrap_or_default()
        };
        // The leader moves the slot of a member streaming from someone else to where that member
        // says it is, so that the slot does not hold WAL back for ever (Patroni does the same).
        let mut member_positions = BTreeMap::new();
        for m in &members {
            // A member's slot wins over a permanent slot of the same name, as in Patroni.
            let slot = slot_name_from_member_name(&m.name);
            if primary && m.data.tags.replicatefrom.as_deref().is_some_and(|up| up != self.s.name) {
                if let Some(lsn) = m.data.xlog_location {
                    member_positions.insert(slot.clone(), lsn);
                }
            }
            wanted.insert(slot, SlotKind::Physical);
        }
        let own = slot_name_from_member_name(&self.s.name);
        // A nostream member streams from nobody: no slot is kept or retained for it anywhere.
        let present: std::collections::BTreeSet<String> = cluster
            .members
            .iter()
            .filter(|m| !m.data.tags.nostream)
            .map(|m| slot_name_from_member_name(&m.name))
            .collect();
        let retain = if primary {
            let ttl = member_ttl.unwrap_or(DEFAULT_MEMBER_SLOTS_TTL);
            self.retain_member_slots(now, status, &present, &permanent.unwrap_or_default(), ttl)
        } else {
            self.slots.retained.clear();
            self.slots.retained_seeded = false;
            status.retain_slots.clone()
        };
        // Slots of members that left lately: kept on the leader, and on the replicas so that
        // whoever leads next still has them. (A present member's slot follows the rules above.)
        for name in retain.iter().filter(|n| !present.contains(*n)) {
            wanted.entry(name.clone()).or_insert(SlotKind::Physical);
        }
        wanted.remove(&own);
        let idle = self.idle_slots(cluster, primary, &members, &wanted);
        SlotTargets {
            primary,
            wanted,
            positions: if primary { member_positions } else { status.slots.clone() },
            managed: if readable { self.slots.slots_seen.clone() } else { Default::default() },
            ignore: ignore.unwrap_or_default(),
            retain: if primary { retain } else { Vec::new() },
            idle,
        }
    }

    /// The wanted physical slots no standby should stream through here (Patroni's
    /// `expected_active: False`): on the primary, the slots of members cascading from another
    /// member; on a replica, every slot but those of members streaming from it (the permanent
    /// ones included). None while the cluster has no leader or while we hold the lock still in
    /// recovery (Patroni's `clean_inactive_physical_slots`); slots kept only for members that
    /// left are not judged either.
    pub(super) fn idle_slots(
        &self,
        cluster: &Cluster,
        primary: bool,
        members: &[&crate::model::Member],
        wanted: &BTreeMap<String, SlotKind>,
    ) -> std::collections::BTreeSet<String> {
        let me = self.s.name.as_str();
        let leader = cluster.leader.as_ref().map(|l| l.name.as_str());
        if leader.is_none() || (leader == Some(me) && !primary) {
            return Default::default();
        }
        let permanent = self.config.permanent_slots().unwrap_or_default();
        let mut idle: std::collections::BTreeSet<String> = if primary {
            Default::default()
        } else {
            permanent.keys().filter(|n| wanted.get(*n) == Some(&SlotKind::Physical)).cloned().collect()
        };
        for m in members {
            let up = m.data.tags.replicatefrom.as_deref();
            let expected_active = if primary {
                up.is_none_or(|up| up == me || cluster.member(up).is_none())
            } else {
                up == Some(me) && Some(m.name.as_str()) != leader
            };
            let slot = slot_name_from_member_name(&m.name);
            if expected_active || wanted.get(&slot) != Some(&SlotKind::Physical) {
                idle.remove(&slot);
            } else {
                idle.insert(slot);
            }
        }
        idle
    }

    /// The slots a running replica keeps: [`HaNode::slot_targets`], without logical ones on a
    /// `nostream` member (without a stream its feedback never reaches the primary, so a logical
    /// slot there would be unsafe to use, as in Patroni).
    pub(super) fn replica_slot_targets(&mut self, now: Millis, cluster: &Cluster) -> SlotTargets {
        let mut targets = self.slot_targets(now, cluster, false);
        if self.s.tags.nostream {
            targets.wanted.retain(|_, kind| matches!(kind, SlotKind::Physical));
        }
        targets
    }

    /// Leader: `member_slots_ttl` bookkeeping (as Patroni's `retain_slots`). Every present
    /// member's slot name is marked seen now; a name not seen for `ttl_secs` is forgotten. On the
    /// first call of a leadership the names the previous leader published start afresh, so a
    /// failover never shortens their retention. Returns the names to publish, present members
    /// included (so replicas know these slots are Rampart's to drop later), permanent slots not.
    pub(super) fn retain_member_slots(
        &mut self,
        now: Millis,
        status: &crate::model::Status,
        present: &std::collections::BTreeSet<String>,
        permanent: &BTreeMap<String, SlotKind>,
        ttl_secs: u64,
    ) -> Vec<String> {
        if !self.slots.retained_seeded {
            self.slots.retained_seeded = true;
            for name in &status.retain_slots {
                self.slots.retained.insert(name.clone(), now);
            }
        }
        // Our own name counts as present even before our member key is back.
        let own = slot_name_from_member_name(&self.s.name);
        let present: Vec<&String> = present.iter().chain([&own]).collect();
        for name in &present {
            self.slots.retained.insert((*name).clone(), now);
        }
        self.slots.retained.retain(|name, seen| !permanent.contains_key(name) && now < seen.plus_secs(ttl_secs));
        // With a ttl of 0 the present members' names expire at once too; they are still published.
        let mut out: std::collections::BTreeSet<String> = self.slots.retained.keys().cloned().collect();
        out.extend(present.into_iter().filter(|n| !permanent.contains_key(*n)).cloned());
        out.into_iter().collect()
    }

    /// A replica that lacks logical slots the leader has: restart it with copies of them, read
    /// from the leader even when it streams through a cascade (as Patroni does: the cascade
    /// passes its `hot_standby_feedback` on, so the primary keeps the catalog rows the copies
    /// need). Not in maintenance mode, not before it follows its upstream, and a slot copied less
    /// than a minute ago does not cause another restart, so a copy that keeps failing cannot keep
    /// restarting the replica (a newly configured slot is still copied at once).
    pub(super) fn copy_logical_slots(
        &mut self,
        now: Millis,
        r: &RunningPg,
        cluster: &Cluster,
        upstream: &Upstream,
        leader: &str,
        target: &(String, u16),
    ) -> Option<Plan> {
        self.slots.slots_copied.retain(|_, at| now < at.plus_ms(SLOT_COPY_INTERVAL_MS));
        let ready = self.slots.slots_to_copy.iter().any(|s| !self.slots.slots_copied.contains_key(s))
            && !self.config.paused()
            && r.upstream.as_ref() == Some(target);
        if !ready {
            return None;
        }
        let from = upstream_of(cluster, leader)?;
        let slots = std::mem::take(&mut self.slots.slots_to_copy);
        for s in &slots {
            self.slots.slots_copied.insert(s.clone(), now);
        }
        let msg = format!(
            "restarting to copy logical slots [{}] from the leader: PostgreSQL 15 cannot create them on a replica",
            slots.join(",")
        );
        let job = Job::CopyLogicalSlots { from, upstream: upstream.clone(), slots };
        Some(self.plan(now, vec![Action::StartJob(job)], &msg))
    }

    /// This member receives no WAL stream from the primary: it is tagged `nostream`, or cascades
    /// from a member that is.
    pub(super) fn streams_from_nowhere(&self, cluster: &Cluster) -> bool {
        self.s.tags.nostream
            || self
                .s
                .tags
                .replicatefrom
                .as_deref()
                .and_then(|up| cluster.member(up))
                .is_some_and(|up| up.data.tags.nostream)
    }

    /// Members that need a replication slot on the leader: everyone else, except those streaming
    /// from another running replica (`replicatefrom`), whose slot lives there instead, and those
    /// that do not stream at all (`nostream`): a slot nobody uses would make the leader keep WAL
    /// forever.
    pub(super) fn other_members(&self, cluster: &Cluster) -> Vec<String> {
        let cascades = |m: &crate::model::Member| {
            m.data.tags.replicatefrom.as_deref().is_some_and(|up| {
                up != self.s.name
                    && up != m.name
                    && cluster
                        .member(up)
                        .is_some_and(|u| u.data.state == PgState::Running && u.data.role == Role::Replica)
            })
        };
        cluster
            .members
            .iter()
            .filter(|m| m.name != self.s.name && !cascades(m) && !m.data.tags.nostream)
            .map(|m| m.name.clone())
            .collect()
    }
}
