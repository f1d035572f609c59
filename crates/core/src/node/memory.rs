//! What a node remembers between cycles, grouped by concern. Each group is changed only by the
//! decisions of its concern, and reset as a whole where that concern ends (a new lease, a
//! successful rewind, a running server), so that no stale flag outlives it.

use std::collections::{BTreeMap, BTreeSet};

use crate::action::StartRole;
use crate::failsafe::Topology;
use crate::model::Cluster;
use crate::observe::Millis;
use crate::roles::Role;
use crate::slots::{ExistingSlot, SlotTargets};
use crate::sync::SyncMark;

/// The leader lock as this process last confirmed it (renewals, the failsafe round).
#[derive(Clone, Debug)]
pub(super) struct Lease {
    /// The lock is ours until this instant (send time of the last confirmed renewal + its
    /// lease's TTL).
    pub(super) leader_until: Option<Millis>,
    /// TTL of the lease behind `leader_until`.
    pub(super) ttl: u64,
}

/// Whether the data directory is consistent with the leader's timeline, and pg_rewind's retries.
#[derive(Clone, Debug, Default)]
pub(super) struct RewindMemory {
    /// The data directory was just made consistent with the leader (a fresh clone or a successful
    /// pg_rewind) and PostgreSQL has not run since. A clone carries the primary's control file
    /// ("in production"), so without this it would look like a diverged former primary.
    pub(super) fresh_copy: bool,
    /// pg_rewind failed; do not loop on it.
    pub(super) rewind_failed: bool,
    /// This replica replayed WAL of its timeline past the point where the leader's timeline
    /// forked off it (a former primary started read-only before the new timeline existed): it
    /// was stopped to be rewound, and must be rewound before it runs again, although its control
    /// file now says "shut down in recovery".
    pub(super) diverged: bool,
    /// When this running replica was first seen stuck past the fork of the leader's timeline,
    /// and at which replay position (see [`HaNode::diverged_replica`]).
    pub(super) diverged_suspect: Option<(Millis, crate::Lsn)>,
    /// pg_rewind failed before it changed the data directory (a full disk, a source that went
    /// away mid-way): the next attempt waits until then, and the wait doubles with each failure
    /// in a row (`rewind_retries`).
    pub(super) retry_rewind_after: Option<Millis>,
    pub(super) rewind_retries: u32,
}

/// Bootstrap, start and restart in place of this member's PostgreSQL.
#[derive(Clone, Debug, Default)]
pub(super) struct StartMemory {
    /// We created `initialize` and must bootstrap.
    pub(super) won_initialize: bool,
    /// PostgreSQL was stopped because the lock could no longer be vouched for (fencing, or a
    /// failed failsafe round): while the DCS stays unreachable it is started again read-only,
    /// following nobody, as Patroni's offline demotion does.
    pub(super) offline_demoted: bool,
    /// First cycle at which we tried to restart a crashed primary in place.
    pub(super) restarting_primary_since: Option<Millis>,
    /// A start of PostgreSQL as primary failed.
    pub(super) primary_start_failed: bool,
    /// A start of PostgreSQL failed; do not try again before this instant.
    pub(super) retry_start_after: Option<Millis>,
}

/// Switchovers under way and promotions refused.
#[derive(Clone, Debug, Default)]
pub(super) struct HandoverMemory {
    /// When we stopped PostgreSQL to hand the lock over in a switchover.
    pub(super) switchover_started: Option<Millis>,
    /// When the running leader first saw its switchover due and began waiting for the proxies to
    /// drain ([`crate::drain`]): the bound counts from here. Kept only while every cycle as
    /// leader of a running primary goes on waiting; any other such cycle, or losing the lock,
    /// forgets it.
    pub(super) drain_since: Option<Millis>,
    /// Do not race for the lock before this instant (pre_promote refused a promotion).
    pub(super) no_race_until: Option<Millis>,
    /// We stopped PostgreSQL to hand the lock over and have not run it since.
    pub(super) rejoin_after_handover: bool,
}

/// The local server's configuration files and role, as the agent last set and saw them.
#[derive(Clone, Debug, Default)]
pub(super) struct ServerMemory {
    /// The role postgresql.conf was last written for ([`crate::ActionResult::Configured`]), or,
    /// for a replica adopted after an agent restart, found from its `primary_conninfo`.
    pub(super) configured: Option<StartRole>,
    /// The role the server last ran in (primary or replica), for `on_role_change`.
    pub(super) seen_role: Option<Role>,
}

/// Synchronous replication while leading a running primary; forgotten otherwise.
#[derive(Clone, Debug, Default)]
pub(super) struct SyncMemory {
    /// Synchronous mode: where the primary's WAL was when the setting in force was first seen.
    /// Only valid while we lead with a running primary; forgotten otherwise.
    pub(super) sync_mark: Option<SyncMark>,
    /// A `synchronous_standby_names` we set whose effect was not confirmed: set it again before
    /// deciding anything else about synchronous replication.
    pub(super) sync_names_unconfirmed: Option<String>,
    /// Synchronous mode: the `synchronous_standby_names` the configuration files carry, as last
    /// set ([`crate::ActionResult::SyncNamesWritten`]) or, after an agent restart, as found on the
    /// running primary; `None` when the mode is off (the user's value applies). Every rewrite of
    /// postgresql.conf renders it, so none changes it by accident. Kept across leaderships.
    pub(super) managed_names: Option<String>,
}

/// Replication slot bookkeeping across cycles.
#[derive(Clone, Debug, Default)]
pub(super) struct SlotMemory {
    /// Slot names any leader published in `status` (`retain_slots`, `slots`) while this process
    /// ran: the unwanted slots we may drop (a replica sees a departed member's slot leave the
    /// leader's list in the same write that stops wanting it).
    pub(super) slots_seen: BTreeSet<String>,
    /// Leader: when each member slot name last belonged to a member (`member_slots_ttl`): the
    /// slot of a member that left is kept until its time here is a `member_slots_ttl` old.
    /// Seeded from `status.retain_slots` when this node starts leading (see `retained_seeded`).
    pub(super) retained: BTreeMap<String, Millis>,
    /// `retained` was seeded from the `status` key during the current leadership.
    pub(super) retained_seeded: bool,
    /// Replica: logical slots the leader has and we lack, as the last slot sync reported.
    pub(super) slots_to_copy: Vec<String>,
    /// When we last restarted to copy each logical slot (a failing copy must not restart in a
    /// loop); entries older than [`SLOT_COPY_INTERVAL_MS`] are forgotten.
    pub(super) slots_copied: BTreeMap<String, Millis>,
    /// The targets of the slot sync the last plan asked for, until its result comes back.
    pub(super) issued: Option<SlotTargets>,
    /// Leader: the targets of the last slot sync as primary and the slots the server had then:
    /// which slots `status` publishes, at the positions the probe listed beside its flush
    /// position (those of the sync when the probe listed none; see
    /// [`crate::slots::published`]). Cleared by a sync as replica.
    pub(super) last_primary_sync: Option<(SlotTargets, Vec<ExistingSlot>)>,
}

/// Failsafe mode: whom to ask and what to keep during a DCS outage.
#[derive(Clone, Debug, Default)]
pub(super) struct FailsafeMemory {
    /// Failsafe mode, while we lead: whom to ask during a DCS outage (from the last snapshot in
    /// which we held the lock).
    pub(super) failsafe_targets: Option<Topology>,
    /// Until when the last complete failsafe round keeps us primary (for the API); cleared as
    /// soon as the DCS answers again.
    pub(super) failsafe_active_until: Option<Millis>,
    /// Failsafe mode: the last snapshot read from the DCS, from which the slots are still kept
    /// during an outage (Patroni keeps its last `Cluster` for the same purpose).
    pub(super) last_cluster: Option<Cluster>,
}

impl StartMemory {
    /// PostgreSQL runs (or was started again in place): a restart in place is over.
    pub(super) fn forget_restart(&mut self) {
        self.restarting_primary_since = None;
        self.primary_start_failed = false;
    }
}

impl RewindMemory {
    /// pg_rewind succeeded: the data directory follows the leader's timeline, nothing failed.
    pub(super) fn rewound(&mut self) {
        *self = RewindMemory { fresh_copy: true, ..Default::default() };
    }
}

impl SyncMemory {
    /// The run as leader with a running primary ended: what it set and saw speaks for it only.
    pub(super) fn forget(&mut self) {
        *self = SyncMemory { managed_names: self.managed_names.take(), ..Default::default() };
    }
}
