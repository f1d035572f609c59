//! The per-cycle decision: one node's HA state machine.
//!
//! [`HaNode::decide`] is a pure function of the observation and the node's small memory (when
//! its lock was last confirmed, whether it won the bootstrap race, whether a rewind already ran).
//! It follows Patroni's ordered decision list: background job in progress, DCS unreachable, data
//! directory empty (bootstrap or clone), system-identifier check, PostgreSQL not running
//! (restart in place, rewind, start as replica), PostgreSQL running (leader renews, replicas
//! follow, the healthiest races when there is no leader).
//!
//! Invariants kept here:
//! * **Fencing before expiry.** While this node believes it holds the lock, the lock is valid
//!   until `sent_at + ttl` of the last confirmed renewal (etcd starts the TTL later than we sent,
//!   so this is conservative). Once `now` reaches that instant minus [`fence_margin_ms`], a live
//!   PostgreSQL is stopped immediately, whatever else is going on.
//! * **No primary without the lock.** A running primary that sees another holder demotes; one
//!   that cannot confirm the lock with the DCS unreachable stops.
//! * **Only the healthiest races** (see [`crate::election`]).
//! * **A former primary follows a new leader only after pg_rewind** (or a fresh clone when
//!   `remove_data_directory_on_rewind_failure` allows it).
//! * **Synchronous mode** (see [`crate::sync`] and [`crate::sync_election`]): a promoted member
//!   starts PostgreSQL waiting for a standby that does not exist until it has written the `sync`
//!   key in its own name, so nothing is acknowledged while the key still names the old leader; a
//!   leader starting PostgreSQL in place starts it with the setting its key vouches for; only
//!   members that provably hold every acknowledged commit race, and a manual failover to any other
//!   member needs `force`.
//! * **Failsafe mode** (see [`crate::failsafe`]): with the DCS unreachable, a round of
//!   `POST /failsafe` that every listed member accepted extends the fence deadline exactly as a
//!   lock renewal sent at the same instant would; nothing else does. A replica bound by a fresh
//!   ping, or missing from the stored topology, never races.

use crate::action::{Action, ActionResult, Answer, Job, Plan, StartRole, StopMode, Upstream};
use crate::admission::{self, Refusal};
use crate::dynamic::DynamicConfig;
use crate::election::{self, Candidate, Verdict};
use crate::failsafe::{self, Topology};
use crate::hot_standby;
use crate::manual::{self, LeaderStep, ReleaseStep, ReplicaStep};
use crate::model::{Cluster, Tags};
use crate::observe::{
    ControlData, DataDir, DcsView, JobError, JobKind, JobState, Millis, Observation, PeerReport, PgProcess, Request,
    RunningPg,
};
use crate::roles::{PgState, Role, WalsenderState};
use crate::slots::{slot_name_from_member_name, SlotKind, SlotTargets};
use crate::sync::{self, LeaderSync, SyncMark};
use crate::sync_election::SyncRule;
use std::collections::BTreeMap;

/// How long before the lease could expire the leader fences itself: a quarter of the ttl, at
/// most 5 s. An immediate shutdown takes well under a second; the rest is slack for a slow disk.
pub fn fence_margin_ms(ttl_secs: u64) -> u64 {
    (ttl_secs * 250).min(5_000)
}

/// `member_slots_ttl` when it is not set (Patroni's default, 30 minutes).
pub const DEFAULT_MEMBER_SLOTS_TTL: u64 = 1800;

/// Cycle period of every member while an immediate switchover or failover is in progress.
pub const HANDOVER_CYCLE_MS: u64 = 250;

/// Shortest time between two restarts of a replica to copy the same logical slot.
pub const SLOT_COPY_INTERVAL_MS: u64 = 60_000;

/// How long a running replica must stay stuck past the fork of the leader's timeline, replaying
/// nothing, before it is taken for diverged: twice PostgreSQL's default
/// `wal_retrieve_retry_interval`, so a healthy replica's receiver has reconnected by then.
pub const DIVERGED_AFTER_MS: u64 = 10_000;

/// How soon the leader looks again after changing synchronous replication.
pub const SYNC_FOLLOW_UP_MS: u64 = 1_000;

/// Per-node settings from the local configuration that the decision depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSettings {
    /// This member's name.
    pub name: String,
    /// Its tags.
    pub tags: Tags,
    /// `postgresql.use_pg_rewind` from the local file, which overrides the dynamic value.
    pub use_pg_rewind: Option<bool>,
    /// Wipe and re-clone when pg_rewind fails.
    pub remove_data_directory_on_rewind_failure: bool,
    /// `bootstrap.dcs`: the dynamic configuration used until the DCS has one.
    pub bootstrap_dcs: DynamicConfig,
    /// A replica creation method works without a member to copy from (`no_leader`, say a
    /// restore from backups): a new member may make its data directory while there is no leader.
    pub clone_without_leader: bool,
}

/// One node's HA state machine: settings plus the little it must remember between cycles.
#[derive(Debug)]
pub struct HaNode {
    s: NodeSettings,
    /// The lock is ours until this instant (send time of the last confirmed renewal + its
    /// lease's TTL).
    leader_until: Option<Millis>,
    /// TTL of the lease behind `leader_until`.
    lease_ttl: u64,
    /// Dynamic configuration last seen in the DCS (kept for cycles where the DCS is unreachable).
    config: DynamicConfig,
    /// We created `initialize` and must bootstrap.
    won_initialize: bool,
    /// The data directory was just made consistent with the leader (a fresh clone or a successful
    /// pg_rewind) and PostgreSQL has not run since. A clone carries the primary's control file
    /// ("in production"), so without this it would look like a diverged former primary.
    fresh_copy: bool,
    /// pg_rewind failed; do not loop on it.
    rewind_failed: bool,
    /// This replica replayed WAL of its timeline past the point where the leader's timeline
    /// forked off it (a former primary started read-only before the new timeline existed): it
    /// was stopped to be rewound, and must be rewound before it runs again, although its control
    /// file now says "shut down in recovery".
    diverged: bool,
    /// PostgreSQL was stopped because the lock could no longer be vouched for (fencing, or a
    /// failed failsafe round): while the DCS stays unreachable it is started again read-only,
    /// following nobody, as Patroni's offline demotion does.
    offline_demoted: bool,
    /// When this running replica was first seen stuck past the fork of the leader's timeline,
    /// and at which replay position (see [`HaNode::diverged_replica`]).
    diverged_suspect: Option<(Millis, crate::Lsn)>,
    /// First cycle at which we tried to restart a crashed primary in place.
    restarting_primary_since: Option<Millis>,
    /// A start of PostgreSQL as primary failed.
    primary_start_failed: bool,
    /// When we stopped PostgreSQL to hand the lock over in a switchover.
    switchover_started: Option<Millis>,
    /// Do not race for the lock before this instant (pre_promote refused a promotion).
    no_race_until: Option<Millis>,
    /// A start of PostgreSQL failed; do not try again before this instant.
    retry_start_after: Option<Millis>,
    /// pg_rewind failed before it changed the data directory (a full disk, a source that went
    /// away mid-way): the next attempt waits until then, and the wait doubles with each failure
    /// in a row (`rewind_retries`).
    retry_rewind_after: Option<Millis>,
    rewind_retries: u32,
    /// We stopped PostgreSQL to hand the lock over and have not run it since.
    rejoin_after_handover: bool,
    /// Synchronous mode: where the primary's WAL was when the setting in force was first seen.
    /// Only valid while we lead with a running primary; forgotten otherwise.
    sync_mark: Option<SyncMark>,
    /// A `synchronous_standby_names` we set whose effect was not confirmed: set it again before
    /// deciding anything else about synchronous replication.
    sync_names_unconfirmed: Option<String>,
    /// Slot names any leader published in `status` (`retain_slots`, `slots`) while this process
    /// ran: the unwanted slots we may drop (a replica sees a departed member's slot leave the
    /// leader's list in the same write that stops wanting it).
    slots_seen: std::collections::BTreeSet<String>,
    /// Leader: when each member slot name last belonged to a member (`member_slots_ttl`): the
    /// slot of a member that left is kept until its time here is a `member_slots_ttl` old.
    /// Seeded from `status.retain_slots` when this node starts leading (see `retained_seeded`).
    retained: BTreeMap<String, Millis>,
    /// `retained` was seeded from the `status` key during the current leadership.
    retained_seeded: bool,
    /// Replica: logical slots the leader has and we lack, as the last slot sync reported.
    slots_to_copy: Vec<String>,
    /// When we last restarted to copy each logical slot (a failing copy must not restart in a
    /// loop); entries older than [`SLOT_COPY_INTERVAL_MS`] are forgotten.
    slots_copied: BTreeMap<String, Millis>,
    /// Failsafe mode, while we lead: whom to ask during a DCS outage (from the last snapshot in
    /// which we held the lock).
    failsafe_targets: Option<Topology>,
    /// Until when the last complete failsafe round keeps us primary (for the API); cleared as
    /// soon as the DCS answers again.
    failsafe_active_until: Option<Millis>,
    /// Failsafe mode: the last snapshot read from the DCS, from which the slots are still kept
    /// during an outage (Patroni keeps its last `Cluster` for the same purpose).
    last_cluster: Option<Cluster>,
}

/// What role this node believes it has, for the API and the member key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Believed {
    /// Holds a lock that has not expired.
    Leader,
    /// Anything else.
    NotLeader,
}

impl HaNode {
    /// A node with no memory yet.
    pub fn new(settings: NodeSettings) -> Self {
        let config = settings.bootstrap_dcs.clone();
        HaNode {
            s: settings,
            leader_until: None,
            lease_ttl: config.ttl,
            config,
            won_initialize: false,
            fresh_copy: false,
            rewind_failed: false,
            diverged: false,
            diverged_suspect: None,
            offline_demoted: false,
            restarting_primary_since: None,
            primary_start_failed: false,
            switchover_started: None,
            no_race_until: None,
            retry_start_after: None,
            retry_rewind_after: None,
            rewind_retries: 0,
            rejoin_after_handover: false,
            sync_mark: None,
            sync_names_unconfirmed: None,
            slots_seen: Default::default(),
            retained: BTreeMap::new(),
            retained_seeded: false,
            slots_to_copy: Vec::new(),
            slots_copied: BTreeMap::new(),
            failsafe_targets: None,
            failsafe_active_until: None,
            last_cluster: None,
        }
    }

    /// Replaces the settings (after the configuration file was reloaded).
    pub fn update_settings(&mut self, settings: NodeSettings) {
        self.s = settings;
    }

    /// The settings this node was built with.
    pub fn settings(&self) -> &NodeSettings {
        &self.s
    }

    /// The dynamic configuration in force (last seen in the DCS, else `bootstrap.dcs`).
    pub fn config(&self) -> &DynamicConfig {
        &self.config
    }

    /// Whether this process holds the leader lock: the key names this member *and* this process
    /// confirmed it (acquired or renewed it). The name alone is not enough: an agent started with
    /// a live member's name sees that member's key, and must never release it (rule tested by
    /// `an_agent_never_releases_a_lock_it_does_not_hold`).
    fn holds_lock(&self, cluster: &Cluster) -> bool {
        cluster.is_leader(&self.s.name) && self.leader_until.is_some()
    }

    /// Until when the lock is ours, if we hold it.
    pub fn leader_until(&self) -> Option<Millis> {
        self.leader_until
    }

    /// The instant by which a primary must have stopped taking writes if its lock has not been
    /// confirmed again. The driver bounds every DCS call so that it returns before this.
    pub fn fence_deadline(&self) -> Option<Millis> {
        self.leader_until.map(|u| Millis(u.0.saturating_sub(fence_margin_ms(self.lease_ttl))))
    }

    /// Failsafe mode with the DCS unreachable: the members the driver must `POST /failsafe` to
    /// this cycle (ourselves included; the driver skips us). `None` when this node does not lead
    /// in failsafe mode.
    pub fn failsafe_targets(&self) -> Option<&Topology> {
        if !self.config.failsafe_mode() || self.leader_until.is_none() {
            return None;
        }
        self.failsafe_targets.as_ref().filter(|t| t.contains_key(&self.s.name))
    }

    /// Whether this leader runs on the strength of its members' promises at `now` (the DCS is
    /// unreachable and the last failsafe round was accepted by everyone): Patroni's
    /// `failsafe_mode_is_active`.
    pub fn failsafe_active(&self, now: Millis) -> bool {
        self.failsafe_active_until.is_some_and(|u| now < u)
    }

    /// Whether this node keeps out of leader races at `now` (a promotion of its was refused by
    /// `pre_promote`). Published, so that the others do not wait for it.
    pub fn race_backoff(&self, now: Millis) -> bool {
        self.no_race_until.is_some_and(|u| now < u)
    }

    /// Whether this node may present itself as leader at `now`.
    pub fn believed(&self, now: Millis) -> Believed {
        match self.leader_until {
            Some(u) if now < u => Believed::Leader,
            _ => Believed::NotLeader,
        }
    }

    /// Records the result of an action.
    pub fn advance(&mut self, result: ActionResult) {
        match result {
            ActionResult::InitializeRace { won } => self.won_initialize = won,
            ActionResult::Leader { held: true, sent_at, ttl_secs } => {
                self.leader_until = Some(sent_at.plus_secs(ttl_secs));
                self.lease_ttl = ttl_secs;
            }
            ActionResult::Leader { held: false, .. } => self.leader_until = None,
            ActionResult::LeaderReleased => self.leader_until = None,
            ActionResult::SyncNamesUnconfirmed(v) => self.sync_names_unconfirmed = Some(v),
            ActionResult::LogicalSlotsMissing(v) => self.slots_to_copy = v,
        }
    }

    /// What to do when the agent is asked to stop: stop PostgreSQL cleanly first (its walsenders
    /// hand the shutdown checkpoint to the replicas), and only then release the lock, so that no
    /// replica can be promoted while this primary still takes writes.
    pub fn decide_shutdown(&mut self, obs: &Observation<'_>) -> Plan {
        let paused = self.config.paused();
        let mut actions = Vec::new();
        if paused {
            return self.plan(obs.now, actions, "PAUSE: leaving PostgreSQL running on shutdown (maintenance mode)");
        }
        if obs.local.process.is_alive() {
            actions.push(Action::Stop(StopMode::Fast));
        }
        let holds = match &obs.dcs {
            DcsView::Ok(c) => self.holds_lock(c),
            DcsView::Unavailable(_) => self.leader_until.is_some(),
        };
        if holds {
            actions.push(Action::ReleaseLeader);
        }
        let message = match (actions.first(), holds) {
            (Some(Action::Stop(_)), true) => "shutting down: stopping PostgreSQL, then releasing the leader lock",
            (Some(Action::Stop(_)), false) => "shutting down: stopping PostgreSQL",
            (_, true) => "shutting down: PostgreSQL is not running; releasing the leader lock",
            (_, false) => "shutting down: PostgreSQL is not running",
        };
        self.plan(obs.now, actions, message)
    }

    /// Decides this cycle.
    pub fn decide(&mut self, obs: &Observation<'_>) -> Plan {
        let mut plan = self.decide_inner(obs);
        // While a switchover or failover is being carried out, every member looks again often:
        // the members judge each other on what they publish once per cycle (the old leader waits
        // for the candidate to report the shutdown checkpoint), so a loop_wait-long cycle would
        // stretch the handover to a loop_wait.
        if matches!(&obs.dcs, DcsView::Ok(c) if c.failover.as_ref().is_some_and(|f| manual::is_due(f, obs.wall_clock_ms)))
        {
            plan.next_cycle = plan.next_cycle.min(obs.now.plus_ms(HANDOVER_CYCLE_MS));
        }
        let plan = match obs.watchdog_unusable {
            Some(why) if !self.config.paused() => self.without_watchdog(obs, plan, why),
            _ => plan,
        };
        self.without_standby_cluster(obs.now, plan)
    }

    /// `standby_cluster` in the dynamic configuration (not supported yet): no lock is taken and
    /// nothing promoted (rule: [`crate::standby_cluster::gate`]).
    fn without_standby_cluster(&mut self, now: Millis, plan: Plan) -> Plan {
        if self.config.standby_cluster().is_none() {
            return plan;
        }
        let Some(actions) = crate::standby_cluster::gate(&plan.actions) else { return plan };
        let answer = plan.answer.as_ref().map(|_| crate::standby_cluster::refused_answer());
        let mut gated = self.plan(
            now,
            actions,
            &format!(
                "standby_cluster is set in the dynamic configuration ({}): not taking the leader lock ({})",
                crate::standby_cluster::UNSUPPORTED,
                plan.message
            ),
        );
        gated.answer = answer;
        gated
    }

    /// `watchdog.mode: required` with a watchdog that cannot be armed: no lock is taken or kept
    /// (rule: [`crate::watchdog::required_gate`]). A released lock also keeps this member out of
    /// the race for a ttl, so it does not take the lock back at once.
    fn without_watchdog(&mut self, obs: &Observation<'_>, plan: Plan, why: &str) -> Plan {
        let holds = self.leader_until.is_some_and(|u| obs.now < u)
            || matches!(&obs.dcs, DcsView::Ok(c) if c.is_leader(&self.s.name));
        let running_job = matches!(obs.job, Some(JobState::Running(_)));
        let Some(actions) =
            crate::watchdog::required_gate(holds, obs.local.process.is_primary(), running_job, &plan.actions)
        else {
            return plan;
        };
        let what = if holds {
            self.no_race_until = Some(obs.now.plus_secs(self.config.ttl));
            "releasing the leader lock"
        } else {
            "not taking the leader lock"
        };
        let mut gated =
            self.plan(obs.now, actions, &format!("watchdog is required but cannot be used ({why}): {what}"));
        gated.answer = plan.answer;
        gated
    }

    fn decide_inner(&mut self, obs: &Observation<'_>) -> Plan {
        if let DcsView::Ok(c) = &obs.dcs {
            self.config = c.effective_config(&self.s.bootstrap_dcs);
            if !c.is_leader(&self.s.name) {
                // Someone else holds the key, or nobody does: either way it is not ours.
                self.leader_until = None;
            }
            self.failsafe_active_until = None;
            // With the DCS back, the usual rules decide how the server runs again.
            self.offline_demoted = false;
            self.failsafe_targets =
                (self.config.failsafe_mode() && c.is_leader(&self.s.name)).then(|| failsafe::targets_of(c));
            self.last_cluster = self.config.failsafe_mode().then(|| (*c).clone());
        }
        // A failsafe round runs only while the DCS is unreachable; it is weighed before the fence
        // check, since an accepted round is what moves the deadline.
        let failsafe_outcome = match (&obs.dcs, obs.failsafe_round) {
            (DcsView::Unavailable(_), Some(round)) => Some(self.weigh_failsafe_round(obs, round)),
            _ => None,
        };
        // The mark speaks for one unbroken run as leader with a running primary; any other cycle
        // ends it (a later leadership would otherwise trust positions from another history).
        let leading_primary = matches!(&obs.dcs, DcsView::Ok(c) if c.is_leader(&self.s.name))
            && obs.local.process.is_primary()
            && obs.job.is_none();
        if !leading_primary {
            self.sync_mark = None;
            // A setting left unconfirmed belongs to that run too: a later leadership must not
            // re-apply it before deciding afresh.
            self.sync_names_unconfirmed = None;
        }
        let now = obs.now;

        // Fencing comes before everything else, including a running job: a live PostgreSQL
        // must not outlive a lock we can no longer vouch for.
        if let (Some(deadline), true) = (self.fence_deadline(), obs.local.process.is_alive()) {
            if now >= deadline && !self.config.paused() {
                self.leader_until = None;
                self.offline_demoted = true;
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Immediate)],
                    "demoting: the leader lock could not be renewed before its lease runs out; stopped PostgreSQL",
                );
            }
        }

        if let Some(plan) = self.on_job(obs) {
            return plan;
        }

        let cluster = match &obs.dcs {
            DcsView::Ok(c) => *c,
            DcsView::Unavailable(why) => {
                let plan = self.dcs_unavailable(obs, why, failsafe_outcome);
                return match &obs.request {
                    Some(_) => with_answer(plan, Answer::Refused(format!("the DCS is unreachable: {why}"))),
                    None => plan,
                };
            }
        };

        if let Some(req) = &obs.request {
            return self.on_request(obs, cluster, req);
        }

        // A server whose data directory vanished or broke under it is serving from files that
        // are gone: stop it before anything (cloning, reinitializing) touches the directory.
        if !matches!(obs.local.data, DataDir::Initialized(_)) && obs.local.process.is_alive() {
            let mut actions = vec![Action::Stop(StopMode::Immediate)];
            if self.holds_lock(cluster) {
                actions.push(Action::ReleaseLeader);
            }
            return self.plan(
                now,
                actions,
                "the data directory is gone or unusable under a running PostgreSQL: stopping it",
            );
        }

        match &obs.local.data {
            DataDir::Invalid(why) => {
                let mut actions = vec![];
                if self.holds_lock(cluster) {
                    actions.push(Action::ReleaseLeader);
                }
                self.plan(now, actions, &format!("data directory is not usable ({why}); leaving it untouched"))
            }
            DataDir::Empty => self.empty_data_dir(obs, cluster),
            DataDir::Initialized(ctl) => {
                if let Some(init) = cluster.initialize.as_deref() {
                    if !init.is_empty() && init != ctl.sysid && !self.config.paused() {
                        return self.plan(
                            now,
                            vec![Action::Fatal(format!(
                                "the data directory has system identifier {} but the cluster was initialized with {}; \
                                 refusing to join it (remove the data directory to re-clone)",
                                ctl.sysid, init
                            ))],
                            "system identifier mismatch",
                        );
                    }
                }
                match &obs.local.process {
                    PgProcess::Stopped | PgProcess::Crashed => self.not_running(obs, cluster, ctl),
                    PgProcess::Starting => {
                        if cluster.is_leader(&self.s.name) {
                            self.plan(
                                now,
                                vec![Action::RenewLeader],
                                "updated leader lock while PostgreSQL is starting",
                            )
                        } else {
                            self.plan(now, vec![], "PostgreSQL is starting")
                        }
                    }
                    PgProcess::Running(r) => self.running(obs, cluster, ctl, r),
                }
            }
        }
    }

    /// A background job is running or has just finished.
    fn on_job(&mut self, obs: &Observation<'_>) -> Option<Plan> {
        let now = obs.now;
        let holds = matches!(&obs.dcs, DcsView::Ok(c) if c.is_leader(&self.s.name));
        match &obs.job {
            None => None,
            Some(JobState::Running(kind)) => {
                if let (Some(req @ Request::Reinitialize { force: true, .. }), DcsView::Ok(c), false) =
                    (&obs.request, &obs.dcs, holds)
                {
                    // Patroni's `reinitialize(force=True)`: the job in progress (a clone or a
                    // rewind that hangs, a start that never ends) is cancelled first.
                    let mut plan = self.on_request(obs, c, req);
                    if plan.answer == Some(Answer::Started) {
                        plan.actions.insert(0, Action::CancelJob);
                        plan.message = format!("cancelling the {}; {}", kind.describe(), plan.message);
                    }
                    return Some(plan);
                }
                let plan = if holds {
                    self.plan(
                        now,
                        vec![Action::RenewLeader],
                        &format!("updated leader lock during {}", kind.describe()),
                    )
                } else {
                    self.plan(now, vec![], &format!("{} in progress", kind.describe()))
                };
                Some(match &obs.request {
                    Some(_) => with_answer(plan, Answer::Refused(format!("a {} is in progress", kind.describe()))),
                    None => plan,
                })
            }
            Some(JobState::Finished(kind, result)) => match (kind, result) {
                (JobKind::Bootstrap, Ok(())) => {
                    self.won_initialize = false;
                    let sysid = match &obs.local.data {
                        DataDir::Initialized(ctl) => ctl.sysid.clone(),
                        _ => String::new(),
                    };
                    Some(self.plan(
                        now,
                        vec![Action::RecordInitialize { sysid }, Action::AcquireLeader],
                        "bootstrap finished: recording the system identifier and taking the leader lock",
                    ))
                }
                (JobKind::Bootstrap, Err(e)) => {
                    self.won_initialize = false;
                    let mut actions = vec![];
                    if obs.local.process.is_alive() {
                        actions.push(Action::Stop(StopMode::Immediate));
                    }
                    // As Patroni (`Ha.cancel_initialization`): the agent then exits rather than
                    // bootstrapping again and again, each time destroying what the failed
                    // attempt left for the operator to look at.
                    actions.push(Action::CancelInitialize);
                    actions.push(Action::Fatal("Failed to bootstrap cluster".into()));
                    Some(self.plan(now, actions, &format!("bootstrap failed ({e}); cancelled initialization")))
                }
                (JobKind::Clone, Err(e)) => {
                    Some(self.plan(now, vec![Action::WipeDataDir], &format!("replica clone failed ({e}); will retry")))
                }
                (JobKind::Rewind, Err(e @ JobError::RewindSourceUnavailable { .. })) => {
                    Some(self.plan(now, vec![], &format!("pg_rewind not started ({e}); trying again")))
                }
                (JobKind::Rewind, Err(e @ JobError::RewindUntouched { .. }))
                    if !self.s.remove_data_directory_on_rewind_failure =>
                {
                    let wait = rewind_retry_secs(self.config.loop_wait, self.rewind_retries);
                    self.rewind_retries = self.rewind_retries.saturating_add(1);
                    self.retry_rewind_after = Some(now.plus_secs(wait));
                    Some(self.plan(now, vec![], &format!("{e}; trying again in {wait} s")))
                }
                (JobKind::Rewind, Err(e)) => {
                    self.rewind_failed = true;
                    if self.s.remove_data_directory_on_rewind_failure {
                        Some(self.plan(
                            now,
                            vec![Action::WipeDataDir],
                            &format!("pg_rewind failed ({e}); removing the data directory to re-clone"),
                        ))
                    } else {
                        Some(self.plan(
                            now,
                            vec![],
                            &format!(
                                "pg_rewind failed ({e}); not starting PostgreSQL. Set \
                                 remove_data_directory_on_rewind_failure or reinitialize this member"
                            ),
                        ))
                    }
                }
                (JobKind::Clone, Ok(())) => {
                    self.fresh_copy = true;
                    None
                }
                (JobKind::Rewind, Ok(())) => {
                    self.fresh_copy = true;
                    self.rewind_failed = false;
                    self.diverged = false;
                    self.rewind_retries = 0;
                    self.retry_rewind_after = None;
                    None
                }
                (JobKind::Promote, Err(e)) if holds => {
                    // pre_promote said no (or the promotion failed): hand the lock to someone
                    // else and stay out of the race for a ttl, as Patroni does.
                    self.no_race_until = Some(now.plus_secs(self.config.ttl));
                    Some(self.plan(
                        now,
                        vec![Action::ReleaseLeader],
                        &format!(
                            "promotion refused ({e}); releasing the leader lock and staying out of the race for {} s",
                            self.config.ttl
                        ),
                    ))
                }
                (JobKind::Reinitialize, Ok(())) => {
                    self.fresh_copy = true;
                    self.rewind_failed = false;
                    None
                }
                (JobKind::Start | JobKind::Restart, Err(_)) if !holds => {
                    // Do not hammer a start that just failed: try again after a loop_wait.
                    self.retry_start_after = Some(now.plus_secs(self.config.loop_wait));
                    None
                }
                (JobKind::Start | JobKind::Restart, Err(_)) if holds => {
                    // The rule: a leader whose in-place restart fails hands over.
                    self.primary_start_failed = true;
                    None
                }
                _ => None,
            },
        }
    }

    /// Failsafe mode, DCS unreachable: moves the lock's horizon to the round's proof when every
    /// listed member accepted it in time. Returns the proof or why there is none.
    fn weigh_failsafe_round(&mut self, obs: &Observation<'_>, round: &failsafe::Round) -> Result<Millis, String> {
        let (Some(targets), Some(deadline)) = (self.failsafe_targets(), self.fence_deadline()) else {
            return Err("this node does not lead in failsafe mode".into());
        };
        if !obs.local.process.is_primary() {
            return Err("PostgreSQL is not running as primary".into());
        }
        let until = round.proof_until(&self.s.name, targets, deadline, self.config.ttl)?;
        if self.leader_until.is_none_or(|u| u < until) {
            self.leader_until = Some(until);
        }
        self.failsafe_active_until = Some(until);
        Ok(until)
    }

    fn dcs_unavailable(
        &mut self,
        obs: &Observation<'_>,
        why: &str,
        failsafe_outcome: Option<Result<Millis, String>>,
    ) -> Plan {
        let now = obs.now;
        if let Some(Ok(_)) = failsafe_outcome {
            // Still the primary: its slots keep being kept, those of members cascading from
            // others moved to where they said they are.
            let view = self
                .last_cluster
                .as_ref()
                .zip(obs.failsafe_round)
                .map(|(c, r)| failsafe::with_reported_positions(c, r));
            let actions = match view {
                Some(c) if self.config.postgresql.use_slots => {
                    vec![Action::SyncSlots(self.slot_targets(now, &c, true))]
                }
                _ => vec![],
            };
            // Patroni's wording. The next round is due a loop_wait later, well before the proof
            // runs out (ttl >= loop_wait + 2 * retry_timeout).
            return self.plan(
                now,
                actions,
                &format!(
                    "DCS unreachable ({why}); continue to run as a leader because failsafe mode is enabled and all \
                     members are accessible"
                ),
            );
        }
        let paused = self.config.paused();
        if let (Some(Err(e)), true) = (&failsafe_outcome, self.failsafe_targets().is_some()) {
            if obs.local.process.is_primary() && !paused {
                // Failsafe mode's contract (Patroni's): the primary outlives the DCS only while
                // every member of the topology accepts it; one that does not ends it at once.
                // It is started again read-only, to serve reads and to follow whoever leads once
                // the DCS is back.
                self.offline_demoted = true;
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Fast)],
                    &format!("demoting self because DCS is not accessible and I was a leader ({why}; failsafe: {e})"),
                );
            }
        }
        let why = match &failsafe_outcome {
            Some(Err(e)) => format!("{why}; failsafe: {e}"),
            _ => why.to_string(),
        };
        let why = why.as_str();
        if obs.local.process.is_primary() && self.leader_until.is_none() && !paused {
            // A primary whose lock we never confirmed (e.g. the agent just restarted): we cannot
            // know that nobody else was promoted, so it must not take writes.
            self.offline_demoted = true;
            return self.plan(
                now,
                vec![Action::Stop(StopMode::Immediate)],
                &format!("demoting: running as primary without a confirmed lock and the DCS is unreachable ({why})"),
            );
        }
        if self.offline_demoted && !obs.local.process.is_alive() && !paused && obs.job.is_none() {
            if let DataDir::Initialized(_) = &obs.local.data {
                // Patroni's offline demotion ends with the server following nobody, read-only.
                self.offline_demoted = false;
                return self.plan(
                    now,
                    vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
                    &format!("DCS unreachable ({why}); starting PostgreSQL read-only after demoting"),
                );
            }
        }
        match self.fence_deadline() {
            Some(d) if obs.local.process.is_alive() => {
                let mut p = self.plan(
                    now,
                    vec![],
                    &format!("DCS unreachable ({why}); still the leader for {} ms, retrying", now.until(d)),
                );
                // Retry the DCS often while the clock runs.
                p.next_cycle = p.next_cycle.min(now.plus_ms(1000));
                p
            }
            _ => {
                let actions = self.failsafe_replica_slots(obs).into_iter().collect();
                self.plan(now, actions, &format!("DCS unreachable ({why})"))
            }
        }
    }

    /// A replica during a DCS outage, bound by a fresh ping of the primary in failsafe mode:
    /// the slot sync of a normal cycle, on the last snapshot with the positions the primary
    /// sent, so that its permanent and member slots keep following the primary's (Patroni does
    /// the same; no logical slot is copied meanwhile).
    fn failsafe_replica_slots(&mut self, obs: &Observation<'_>) -> Option<Action> {
        let PgProcess::Running(r) = &obs.local.process else { return None };
        let ping = obs.failsafe_ping.filter(|p| failsafe::PingHold::binds(p, obs.now, self.config.ttl))?;
        if !r.in_recovery || !self.config.failsafe_mode() || !self.config.postgresql.use_slots {
            return None;
        }
        let view = failsafe::with_pinged_slots(self.last_cluster.as_ref()?, ping);
        Some(Action::SyncSlots(self.replica_slot_targets(obs.now, &view)))
    }

    fn empty_data_dir(&mut self, obs: &Observation<'_>, cluster: &Cluster) -> Plan {
        let now = obs.now;
        if self.holds_lock(cluster) {
            return self.plan(now, vec![Action::ReleaseLeader], "data directory is empty: releasing the leader lock");
        }
        if cluster.is_leader(&self.s.name) {
            // The key bears our name but this process never renewed it: it is another agent's
            // (one started with our name), or a previous run's that expires by itself. Deleting
            // it would fail over a live primary; cloning would copy from "ourselves".
            return self.plan(
                now,
                vec![],
                "data directory is empty and the leader key names this member, but this agent does not hold the \
                 lock: leaving it alone (is another agent running with this name?)",
            );
        }
        if self.won_initialize {
            return self.plan(
                now,
                vec![Action::StartJob(Job::Bootstrap)],
                "won the initialize race: bootstrapping a new cluster",
            );
        }
        match (&cluster.initialize, &cluster.leader) {
            (_, Some(_)) => match self.clone_source(cluster) {
                Some(src) => {
                    let msg = format!("cloning a replica from {}", src.name);
                    self.plan(now, vec![Action::StartJob(Job::Clone(Some(src)))], &msg)
                }
                None => self.plan(now, vec![], "waiting for the leader to publish its address"),
            },
            (None, None) => self.plan(now, vec![Action::TryInitialize], "racing to initialize a new cluster"),
            // An empty initialize key is another member's bootstrap in progress (Patroni's
            // "concurrent bootstrap"): its data directory is not worth restoring next to yet.
            (Some(init), None) if self.s.clone_without_leader && !init.is_empty() => self.plan(
                now,
                vec![Action::StartJob(Job::Clone(None))],
                "no leader: trying to bootstrap (without leader) with a replica creation method that needs none",
            ),
            (Some(_), None) => self.plan(now, vec![], "waiting for the leader to bootstrap"),
        }
    }

    /// Where to clone from: a running member tagged `clonefrom`, else the leader.
    fn clone_source(&self, cluster: &Cluster) -> Option<Upstream> {
        let preferred = cluster
            .members
            .iter()
            .filter(|m| m.name != self.s.name && m.data.tags.clonefrom && m.data.state == PgState::Running)
            .find_map(|m| upstream_of(cluster, &m.name));
        preferred.or_else(|| cluster.leader.as_ref().and_then(|l| upstream_of(cluster, &l.name)))
    }

    /// A replica on an older timeline than the cluster's that replayed past the point where its
    /// timeline ended in the leader's history can never follow the leader (PostgreSQL says "new
    /// timeline forked off current database system timeline before current recovery point" and
    /// waits forever). This happens to a former primary that was started read-only before the new
    /// timeline existed, so its control file no longer says it was a primary. It is stopped
    /// cleanly, and rewound before it runs again.
    fn diverged_replica(&mut self, now: Millis, cluster: &Cluster, r: &RunningPg, paused: bool) -> Option<Plan> {
        // Only the WAL receiver's timeline says which timeline the replay is on now: the control
        // file's lags until the next restartpoint, and a healthy replica that already replays the
        // leader's timeline past the fork would look diverged by it. A diverged replica never
        // streams (its upstream refuses a start point that is not in its history), so one that
        // streams is left alone too.
        let suspect = self.diverged_suspect.take();
        let timeline = r.receiver_timeline?;
        let replayed = r.wal.replayed?;
        if r.streaming {
            return None;
        }
        let fork = cluster.passed_fork(timeline, replayed)?;
        // The receiver's timeline is the last one it streamed: a replica that went on to the new
        // timeline through restore_command, or whose upstream just went away, still shows the
        // old one until it streams again. Only a replica stuck there, replaying nothing, for
        // longer than its receiver takes to reconnect has diverged.
        match suspect {
            Some((since, at)) if at == replayed => {
                if since.until(now) < DIVERGED_AFTER_MS {
                    self.diverged_suspect = suspect;
                    return None;
                }
            }
            _ => {
                self.diverged_suspect = Some((now, replayed));
                return None;
            }
        }
        let what = format!(
            "replayed {replayed} on timeline {timeline} past where the leader's timeline forked off it ({fork})"
        );
        if paused || !self.use_pg_rewind() {
            let why = if paused { "maintenance mode" } else { "use_pg_rewind is off" };
            return Some(self.plan(now, vec![], &format!("{what}: needs pg_rewind or reinitialize ({why})")));
        }
        self.diverged = true;
        Some(self.plan(now, vec![Action::Stop(StopMode::Fast)], &format!("{what}: stopping PostgreSQL to rewind it")))
    }

    fn use_pg_rewind(&self) -> bool {
        self.s.use_pg_rewind.unwrap_or(self.config.postgresql.use_pg_rewind)
    }

    fn not_running(&mut self, obs: &Observation<'_>, cluster: &Cluster, ctl: &ControlData) -> Plan {
        let now = obs.now;
        let me = self.s.name.clone();
        // A switchover we started goes on in maintenance mode too: the operator asked for it.
        if cluster.is_leader(&me) {
            if let (Some(started), Some(f)) = (self.switchover_started, &cluster.failover) {
                return self.hand_over(obs, cluster, f, ctl, started);
            }
        }
        // After handing over, this node comes back as a replica even in maintenance mode: a
        // switchover is not meant to leave the old leader down. Nor is a copy the operator asked
        // for (reinitialize) or a fresh clone: Patroni's clone ends by starting it to follow.
        if self.config.paused() && !self.rejoin_after_handover && !self.fresh_copy {
            // Patroni's rule: in maintenance mode a leader whose PostgreSQL is down gives the
            // lock up rather than claim a primary that does not run (nobody races while paused;
            // after `resume` the healthiest member takes over, or this one once started again).
            if self.holds_lock(cluster) {
                return self.plan(
                    now,
                    vec![Action::ReleaseLeader],
                    "PAUSE: removed leader lock because postgres is not running",
                );
            }
            return self.plan(now, vec![], "PAUSE: PostgreSQL is not running; not starting it in maintenance mode");
        }
        if cluster.is_leader(&me) {
            self.switchover_started = None;
            if self.config.primary_start_timeout() == 0 && self.restarting_primary_since.is_none() {
                // Patroni's rule: primary_start_timeout 0 prefers failing over to restarting the
                // primary, when someone can take over.
                if let Some(heir) = failover_heir(cluster, &me) {
                    return self.plan(
                        now,
                        vec![Action::ReleaseLeader],
                        &format!(
                            "Primary crashed. Failing over. (primary_start_timeout is 0 and {heir} can take over)"
                        ),
                    );
                }
            }
            let since = *self.restarting_primary_since.get_or_insert(now);
            let timed_out = now.0.saturating_sub(since.0) > self.config.primary_start_timeout() * 1000;
            if self.primary_start_failed || timed_out {
                self.primary_start_failed = false;
                self.restarting_primary_since = None;
                return self.plan(
                    now,
                    vec![Action::ReleaseLeader, Action::RoleChangeCallback("demoted".into())],
                    "removed leader key after trying and failing to start postgres",
                );
            }
            if !ctl.state.was_primary() {
                // The lock was taken while this data directory was a replica's (the member died
                // between winning the race and its promotion). Started as a primary it would end
                // recovery on the old timeline, and a former primary that wrote past this point
                // would then look like it needs no rewind. Start it read-only; the next cycle
                // promotes it onto a new timeline, as Patroni does.
                return self.plan(
                    now,
                    vec![Action::RenewLeader, Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
                    "PostgreSQL is not running on the leader and its data directory is a replica's: starting it \
                     read-only to promote it",
                );
            }
            let mut actions = vec![Action::RenewLeader];
            actions.extend(self.names_to_start_primary(cluster));
            actions.push(Action::StartJob(Job::Start(StartRole::Primary)));
            return self.plan(now, actions, "PostgreSQL is not running on the leader: restarting it in place");
        }
        self.switchover_started = None;
        self.restarting_primary_since = None;
        self.primary_start_failed = false;
        if let Some(after) = self.retry_start_after {
            if now < after {
                let mut p = self.plan(now, vec![], "PostgreSQL failed to start; trying again shortly");
                p.next_cycle = p.next_cycle.min(after);
                return p;
            }
            self.retry_start_after = None;
        }
        let Some(leader) = &cluster.leader else {
            return self.plan(
                now,
                vec![Action::StartJob(Job::Start(StartRole::Replica { upstream: None }))],
                "no leader: starting PostgreSQL read-only to take part in the leader race",
            );
        };
        let Some(upstream) = self.desired_upstream(cluster, &leader.name) else {
            return self.plan(now, vec![], "waiting for the leader to publish its address");
        };
        // Only a former primary on an older timeline can have diverged. Rewinding a copy that is on
        // the leader's own timeline would run crash recovery on it and write WAL the leader never
        // had (that is how a fresh clone gets broken).
        let past_fork = stopped_past_fork(ctl, cluster);
        if (ctl.state.was_primary() || self.diverged || past_fork.is_some())
            && !self.fresh_copy
            && ctl.wal_timeline() < cluster.timeline()
        {
            if self.rewind_failed {
                return self.plan(
                    now,
                    vec![],
                    "former primary whose pg_rewind failed: waiting for manual action (reinitialize this member)",
                );
            }
            if self.use_pg_rewind() {
                if let Some(after) = self.retry_rewind_after.filter(|a| now < *a) {
                    let mut p =
                        self.plan(now, vec![], "pg_rewind failed before changing anything; trying again shortly");
                    p.next_cycle = p.next_cycle.min(after);
                    return p;
                }
                let leader_upstream = upstream_of(cluster, &leader.name).unwrap_or_else(|| upstream.clone());
                let what = match &past_fork {
                    Some(p) if !ctl.state.was_primary() => p.clone(),
                    _ => "former primary".to_string(),
                };
                let msg = format!("{what}: running pg_rewind against the new leader {}", leader_upstream.name);
                return self.plan(now, vec![Action::StartJob(Job::Rewind(leader_upstream))], &msg);
            }
        }
        // Stopped as diverged, but its control file shows it is on the leader's timeline after all
        // (or it is a fresh copy): nothing to rewind, and nothing to remember either.
        self.diverged = false;
        let msg = match self.s.tags.nostream {
            true => "starting PostgreSQL as a replica restoring WAL from the archive (nostream)".to_string(),
            false => format!("starting PostgreSQL as a replica of {}", upstream.name),
        };
        let upstream = self.streamed(upstream);
        self.plan(now, vec![Action::StartJob(Job::Start(StartRole::Replica { upstream }))], &msg)
    }

    /// The leader stopped PostgreSQL for a switchover: release the lock once a candidate has the
    /// shutdown checkpoint, or give up and start again as primary.
    fn hand_over(
        &mut self,
        obs: &Observation<'_>,
        cluster: &Cluster,
        f: &crate::model::Failover,
        ctl: &ControlData,
        started: Millis,
    ) -> Plan {
        let now = obs.now;
        let peers = obs.peers.unwrap_or(&[]);
        let peers = if f.force { peers.to_vec() } else { self.sync_competitors(cluster, peers) };
        match manual::as_stopped_leader(f, &peers, ctl.checkpoint_lsn, now.0.saturating_sub(started.0)) {
            ReleaseStep::Release(to) => {
                self.switchover_started = None;
                self.rejoin_after_handover = true;
                self.plan(
                    now,
                    vec![Action::ReleaseLeader],
                    &format!("switchover: {to} has received the shutdown checkpoint; releasing the leader lock"),
                )
            }
            ReleaseStep::Wait => {
                let mut p = self.plan(
                    now,
                    vec![Action::RenewLeader],
                    "switchover: waiting for the candidate to receive the shutdown checkpoint",
                );
                p.next_cycle = p.next_cycle.min(now.plus_ms(300));
                p
            }
            ReleaseStep::Abort => {
                self.switchover_started = None;
                let mut actions = vec![Action::ClearFailover, Action::RenewLeader];
                actions.extend(self.names_to_start_primary(cluster));
                actions.push(Action::StartJob(Job::Start(StartRole::Primary)));
                self.plan(
                    now,
                    actions,
                    "switchover aborted: no candidate received the shutdown checkpoint in time; starting again as primary",
                )
            }
        }
    }

    /// An operator's request.
    fn on_request(&mut self, obs: &Observation<'_>, cluster: &Cluster, req: &Request) -> Plan {
        let now = obs.now;
        let me = self.s.name.clone();
        let leader = cluster.is_leader(&me);
        let mut actions = if leader { vec![Action::RenewLeader] } else { vec![] };
        let refuse = |this: &Self, why: &str| {
            let actions = if leader { vec![Action::RenewLeader] } else { vec![] };
            with_answer(
                this.plan(now, actions, &format!("refused an operator request: {why}")),
                Answer::Refused(why.into()),
            )
        };
        match req {
            Request::Restart => {
                let role = match &obs.local.process {
                    PgProcess::Running(r) if !r.in_recovery && leader => StartRole::Primary,
                    PgProcess::Running(r) if !r.in_recovery => {
                        return refuse(self, "running as primary without the leader lock; not restarting it")
                    }
                    PgProcess::Running(_) => StartRole::Replica {
                        upstream: cluster
                            .leader
                            .as_ref()
                            .and_then(|l| self.desired_upstream(cluster, &l.name))
                            .and_then(|u| self.streamed(u)),
                    },
                    PgProcess::Starting => return refuse(self, "PostgreSQL is starting"),
                    // As Patroni's restart, which starts a server that is not running: in
                    // maintenance mode that is how an operator brings a stopped member back.
                    PgProcess::Stopped | PgProcess::Crashed => {
                        match self.start_role_on_request(cluster, &obs.local.data) {
                            Ok(role) => role,
                            Err(why) => return refuse(self, &why),
                        }
                    }
                };
                actions.push(Action::StartJob(Job::Restart(role)));
                with_answer(self.plan(now, actions, "restarting PostgreSQL on request"), Answer::Started)
            }
            Request::Reinitialize { from_leader, .. } => {
                if leader {
                    return refuse(self, "I am the leader, can not reinitialize");
                }
                let source = if *from_leader {
                    cluster.leader.as_ref().and_then(|l| upstream_of(cluster, &l.name))
                } else {
                    self.clone_source(cluster)
                };
                let Some(source) = source else { return refuse(self, "Cluster has no leader, can not reinitialize") };
                let msg = format!("reinitializing on request: cloning again from {}", source.name);
                actions.push(Action::StartJob(Job::Reinitialize(source)));
                with_answer(self.plan(now, actions, &msg), Answer::Started)
            }
        }
    }

    /// The role in which an operator's restart starts a PostgreSQL that is not running: the
    /// leader's former primary as primary; anything else as a replica of its upstream, except a
    /// former primary behind the cluster's timeline (it needs pg_rewind first) and a data
    /// directory that holds no cluster.
    fn start_role_on_request(&self, cluster: &Cluster, data: &DataDir) -> Result<StartRole, String> {
        let DataDir::Initialized(ctl) = data else {
            return Err("PostgreSQL is not running and the data directory holds no cluster".into());
        };
        if cluster.is_leader(&self.s.name) {
            return Ok(match ctl.state.was_primary() {
                true => StartRole::Primary,
                false => StartRole::Replica { upstream: None },
            });
        }
        if ctl.state.was_primary() && ctl.wal_timeline() < cluster.timeline() {
            return Err("PostgreSQL is not running and is a former primary that needs pg_rewind first".into());
        }
        if let Some(p) = stopped_past_fork(ctl, cluster) {
            return Err(format!("PostgreSQL is not running and needs pg_rewind first: {p}"));
        }
        let upstream = cluster.leader.as_ref().and_then(|l| self.desired_upstream(cluster, &l.name));
        Ok(StartRole::Replica { upstream: upstream.and_then(|u| self.streamed(u)) })
    }

    /// What a replica puts in `primary_conninfo`: `upstream`, or nothing with the `nostream` tag
    /// (it replays only what `restore_command` brings from the archive, as in Patroni 4).
    fn streamed(&self, upstream: Upstream) -> Option<Upstream> {
        (!self.s.tags.nostream).then_some(upstream)
    }

    /// Where a replica streams from: the member its `replicatefrom` tag names, while that member
    /// is a running replica (cascading replication), else the leader. Also the source of a
    /// rewind, so it is named with `nostream` too (see [`HaNode::streamed`]).
    fn desired_upstream(&self, cluster: &Cluster, leader: &str) -> Option<Upstream> {
        let cascade = self.s.tags.replicatefrom.as_deref().filter(|m| *m != self.s.name && *m != leader).filter(|m| {
            cluster.member(m).is_some_and(|mm| mm.data.state == PgState::Running && mm.data.role == Role::Replica)
        });
        cascade.and_then(|m| upstream_of(cluster, m)).or_else(|| upstream_of(cluster, leader))
    }

    fn running(&mut self, obs: &Observation<'_>, cluster: &Cluster, ctl: &ControlData, r: &RunningPg) -> Plan {
        let now = obs.now;
        let me = self.s.name.clone();
        let paused = self.config.paused();
        let pause = if paused { "PAUSE: " } else { "" };
        self.fresh_copy = false;
        self.restarting_primary_since = None;
        self.primary_start_failed = false;
        self.rejoin_after_handover = false;
        let peers = obs.peers.unwrap_or(&[]);
        // Replay paused for insufficient settings never resumes by itself; until a restart the
        // replica can neither serve current data nor be promoted.
        let blocked = if r.in_recovery {
            hot_standby::replay_blocked(r.replay_pause, &r.hot_standby, &ctl.hot_standby)
        } else {
            None
        };

        if cluster.is_leader(&me) {
            if r.in_recovery {
                if paused && cluster.failover.is_none() {
                    return self.plan(
                        now,
                        vec![Action::RenewLeader],
                        "PAUSE: holding the leader lock as a replica; not promoting",
                    );
                }
                if let Some(b) = &blocked {
                    // pg_promote would wait forever ("promotion is not possible because of
                    // insufficient parameter settings"): restart with enough first.
                    return self.plan(
                        now,
                        vec![
                            Action::RenewLeader,
                            Action::StartJob(Job::Restart(StartRole::Replica { upstream: None })),
                        ],
                        &format!("{b}: restarting PostgreSQL with the control file's values before promoting"),
                    );
                }
                // Slots first: the other replicas switch to us as soon as they see the new leader
                // key, and a missing slot would make each of them wait a retry interval.
                // Still in recovery, so replica-style: physical slots only.
                let mut actions = vec![Action::RenewLeader];
                if self.config.postgresql.use_slots {
                    actions.push(Action::SyncSlots(self.slot_targets(now, cluster, false)));
                }
                if cluster.failover.is_some() {
                    actions.push(Action::ClearFailover);
                }
                let mode = self.config.sync_mode();
                if mode.is_active() && r.synchronous_standby_names != sync::placeholder(mode) {
                    // Nothing may be acknowledged until the `sync` key names us: the first cycle
                    // as primary writes it, then picks the real standbys. (Replicas normally
                    // have this in force already; see the following branch.)
                    actions.push(Action::SetSynchronousStandbyNames(sync::placeholder(mode)));
                }
                actions.push(Action::StartJob(Job::Promote));
                return self.plan(now, actions, "promoting self: holding the leader lock");
            }
            self.switchover_started = None;
            let mut actions = vec![Action::RenewLeader];
            if cluster.initialize.as_deref().is_none_or(str::is_empty) {
                actions.push(Action::RecordInitialize { sysid: ctl.sysid.clone() });
            }
            actions.push(Action::WriteStatus);
            if self.config.failsafe_mode() {
                let topology = failsafe::topology_of(cluster);
                if cluster.failsafe.as_ref() != Some(&topology) {
                    actions.push(Action::WriteFailsafe(topology));
                }
            }
            if self.config.postgresql.use_slots {
                actions.push(Action::SyncSlots(self.slot_targets(now, cluster, true)));
            }
            let mut message = format!("{pause}no action. I am ({me}), the leader with the lock");
            let (sync_actions, sync_note) = self.leader_sync(now, cluster, r);
            actions.extend(sync_actions);
            if let Some(note) = sync_note {
                message = format!("{pause}I am ({me}), the leader with the lock; {note}");
            }
            let mut wake_at = None;
            if let Some(f) = &cluster.failover {
                let max_lag = self.config.maximum_lag_on_failover;
                // A forced failover may go to a member the sync key does not list.
                let competitors = if f.force { peers.to_vec() } else { self.sync_competitors(cluster, peers) };
                let step = match self.admission_refusal(cluster, f).or_else(|| self.handover_refusal(cluster, f, r)) {
                    Some(why) => LeaderStep::Clear(why),
                    None => manual::as_running_leader(&me, f, &competitors, obs.wall_clock_ms, r.wal.best(), max_lag),
                };
                match step {
                    LeaderStep::Clear(why) => {
                        actions.push(Action::ClearFailover);
                        message = why;
                    }
                    LeaderStep::WaitUntil(at) => {
                        let ms = u64::try_from(at - obs.wall_clock_ms).unwrap_or(0);
                        wake_at = Some(now.plus_ms(ms));
                        message = format!("{message}; switchover scheduled in {} s", ms / 1000);
                    }
                    LeaderStep::Demote { to } => {
                        self.switchover_started = Some(now);
                        let to = to.unwrap_or_else(|| "the healthiest replica".into());
                        return self.plan(
                            now,
                            vec![Action::RenewLeader, Action::Stop(StopMode::Fast)],
                            &format!("switchover to {to}: stopping PostgreSQL cleanly before handing over the lock"),
                        );
                    }
                }
            }
            let mut p = self.plan(now, actions, &message);
            if let Some(w) = wake_at {
                p.next_cycle = p.next_cycle.min(w);
            }
            return p;
        }

        if let Some(leader) = &cluster.leader {
            if !r.in_recovery {
                if paused {
                    return self.plan(
                        now,
                        vec![],
                        &format!("PAUSE: running as primary while {} holds the lock", leader.name),
                    );
                }
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Immediate)],
                    &format!("demoting self: {} holds the leader lock", leader.name),
                );
            }
            if let Some(p) = self.diverged_replica(now, cluster, r, paused) {
                return p;
            }
            let Some(upstream) = self.desired_upstream(cluster, &leader.name) else {
                return self.plan(now, vec![], "waiting for the leader to publish its address");
            };
            if let Some(b) = &blocked {
                if paused {
                    return self.plan(
                        now,
                        vec![],
                        &format!("PAUSE: {b}; not restarting PostgreSQL in maintenance mode"),
                    );
                }
                return self.plan(
                    now,
                    vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: Some(upstream) }))],
                    &format!("{b}: restarting PostgreSQL with the values the primary's WAL needs"),
                );
            }
            let target = (upstream.host.clone(), upstream.port);
            let nostream = self.s.tags.nostream;
            // A nostream replica gets no copies: without a stream its feedback never reaches the
            // primary, so a logical slot on it would be unsafe to use (as in Patroni).
            if !nostream {
                if let Some(p) = self.copy_logical_slots(now, r, cluster, &upstream, &leader.name, &target) {
                    return p;
                }
            }
            // Slots for every other member (cascading children included) and the permanent ones,
            // so that whoever is promoted next already holds them.
            let mut actions = vec![];
            if self.config.postgresql.use_slots {
                actions.push(Action::SyncSlots(self.replica_slot_targets(now, cluster)));
            }
            if r.upstream.as_ref() != (!nostream).then_some(&target) {
                let msg = match nostream {
                    true => format!("{pause}not streaming (nostream): restoring WAL from the archive only"),
                    false => format!("{pause}following new upstream {}", upstream.name),
                };
                actions.push(Action::Follow { upstream: self.streamed(upstream) });
                return self.plan(now, actions, &msg);
            }
            let mode = self.config.sync_mode();
            if mode.is_active() && r.synchronous_standby_names != sync::placeholder(mode) {
                // A replica keeps the placeholder in force all along, so that a promotion needs no
                // reload at that moment (a reload right before pg_promote can make the startup
                // process miss the promote request for wal_retrieve_retry_interval) and the new
                // primary acknowledges nothing until it has claimed the `sync` key.
                actions.push(Action::SetSynchronousStandbyNames(sync::placeholder(mode)));
            }
            return self.plan(
                now,
                actions,
                &format!("{pause}no action. I am ({me}), a secondary, and following a leader ({})", leader.name),
            );
        }

        // No leader.
        if !r.in_recovery {
            if r.timeline < cluster.timeline() && !paused {
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Immediate)],
                    &format!(
                        "demoting self: primary on timeline {} but the cluster reached {}",
                        r.timeline,
                        cluster.timeline()
                    ),
                );
            }
            return self.plan(
                now,
                vec![Action::AcquireLeader],
                &format!("{pause}acquiring the leader lock as the running primary"),
            );
        }
        // A replica that cannot replay cannot be promoted either: neither the requested candidate
        // nor a racer until it runs with enough (a restart does that).
        if let Some(b) = &blocked {
            if paused {
                return self.plan(now, vec![], &format!("PAUSE: no leader; {b}; not restarting in maintenance mode"));
            }
            return self.plan(
                now,
                vec![Action::StartJob(Job::Restart(StartRole::Replica { upstream: None }))],
                &format!("no leader, not racing: {b}; restarting PostgreSQL with the control file's values"),
            );
        }
        // Before any race, manual failovers included: a primary kept alive by failsafe may still
        // take writes, and only members it asks can vouch for not racing it.
        if let Some(why) = failsafe::race_veto(&self.config, cluster, &me, obs.failsafe_ping, now) {
            let mut p = self.plan(now, vec![], &format!("no leader, not racing (failsafe mode): {why}"));
            if let Some(ping) = obs.failsafe_ping {
                p.next_cycle = p.next_cycle.min(ping.received_at.plus_secs(self.config.ttl));
            }
            return p;
        }
        let mut race_peers: Vec<PeerReport> = peers.to_vec();
        if let Some(f) = &cluster.failover {
            match manual::as_replica(&me, f, peers) {
                // Streaming from a cascade parent (a replica) says nothing about the old primary:
                // the same test as the race below, or a `replicatefrom` candidate never takes over.
                ReplicaStep::Take if r.streaming && !upstream_is_a_replica(cluster, peers, r.upstream.as_ref()) => {
                    // Still connected to the old primary: it is not down yet. Look again soon.
                    let mut p = self.plan(now, vec![], "requested candidate, but still streaming from the old primary");
                    p.next_cycle = p.next_cycle.min(now.plus_ms(200));
                    return p;
                }
                ReplicaStep::Take => {
                    if let Some(rule) = SyncRule::of(&self.config, cluster) {
                        if let (Err(why), false) = (rule.may_promote(&me, r.wal.best(), peers), f.force) {
                            return self.plan(
                                now,
                                vec![Action::ClearFailover],
                                &format!(
                                    "refused the {} to me: {why}; promoting me could lose acknowledged commits \
                                     (a failover with \"force\": true accepts that)",
                                    if f.leader.is_some() { "switchover" } else { "failover" }
                                ),
                            );
                        }
                    }
                    return self.plan(
                        now,
                        vec![Action::AcquireLeader],
                        "taking the leader lock: I am the requested candidate",
                    );
                }
                ReplicaStep::Wait(why) => return self.plan(now, vec![], &why),
                ReplicaStep::Race => {
                    if let Some(old) = &f.leader {
                        race_peers.retain(|p| &p.name != old);
                    }
                }
            }
        }
        if paused {
            return self.plan(now, vec![], "PAUSE: no leader; not racing in maintenance mode");
        }
        if let Some(until) = self.no_race_until {
            if now < until {
                return self.plan(now, vec![], "no leader, not racing: a promotion of mine was refused recently");
            }
            self.no_race_until = None;
        }
        let me_cand = Candidate {
            tags: &self.s.tags,
            wal: r.wal.best(),
            timeline: r.timeline,
            cluster_optime: crate::Lsn(cluster.status.optime),
            cluster_timeline: cluster.timeline(),
            max_lag: self.config.maximum_lag_on_failover,
            check_timeline: self.config.check_timeline,
            streaming: r.streaming
                && !r.upstream_silent_ms.is_some_and(|ms| crate::election::stream_is_stale(ms, self.config.ttl))
                && !upstream_is_a_replica(cluster, &race_peers, r.upstream.as_ref()),
        };
        if let Some(rule) = SyncRule::of(&self.config, cluster) {
            if let Err(why) = rule.may_promote(&me, r.wal.best(), &race_peers) {
                let mut p = self.plan(now, vec![], &format!("no leader, not racing (synchronous mode): {why}"));
                if r.streaming {
                    p.next_cycle = p.next_cycle.min(now.plus_ms(300));
                }
                return p;
            }
        }
        let race_peers = self.sync_competitors(cluster, &race_peers);
        match election::judge(&me_cand, &race_peers) {
            Verdict::Healthiest => {
                self.plan(now, vec![Action::AcquireLeader], "no leader: I am the healthiest member, taking the lock")
            }
            Verdict::NotHealthiest(why) => {
                let mut p = self.plan(now, vec![], &format!("no leader, not racing: {why}"));
                if r.streaming {
                    // The old primary is going away (its WAL sender ends a moment after the lock
                    // is released): check again soon rather than after a whole loop_wait.
                    p.next_cycle = p.next_cycle.min(now.plus_ms(300));
                }
                p
            }
        }
    }

    /// Synchronous mode on the leader: the step of [`sync::leader_step`], unless a setting we made
    /// is not confirmed yet, which is then set again first.
    fn leader_sync(&mut self, now: Millis, cluster: &Cluster, r: &RunningPg) -> (Vec<Action>, Option<String>) {
        if let Some(v) = self.sync_names_unconfirmed.take() {
            if self.config.sync_mode().is_active() && r.synchronous_standby_names != v {
                let note = format!("setting synchronous_standby_names = {v} again: its effect was not confirmed");
                return (vec![Action::SetSynchronousStandbyNames(v)], Some(note));
            }
        }
        let step = sync::leader_step(&LeaderSync {
            me: &self.s.name,
            config: &self.config,
            cluster,
            pg: r,
            mark: self.sync_mark.as_ref(),
            now,
        });
        self.sync_mark = step.mark;
        (step.actions, step.note)
    }

    /// The setting to start PostgreSQL with as primary in synchronous mode (none otherwise).
    fn names_to_start_primary(&self, cluster: &Cluster) -> Option<Action> {
        self.config
            .sync_mode()
            .is_active()
            .then(|| Action::SetSynchronousStandbyNames(sync::restore_names(&self.s.name, &self.config, cluster)))
    }

    /// Peers as candidates for the lock: in `synchronous_mode: on`, those the `sync` key does not
    /// list cannot be promoted, so they are marked ineligible (they neither hold a candidate back
    /// nor count as handover targets).
    fn sync_competitors(&self, cluster: &Cluster, peers: &[PeerReport]) -> Vec<PeerReport> {
        let Some(rule) = SyncRule::of(&self.config, cluster) else { return peers.to_vec() };
        peers
            .iter()
            .cloned()
            .map(|mut p| {
                if !rule.may_compete(&p.name) {
                    if let Some(s) = p.status.as_mut() {
                        s.can_fail_over = false;
                    }
                }
                p
            })
            .collect()
    }

    /// A switchover (or unforced failover) the running leader must not start in synchronous
    /// mode, because too few of the sync key's voters stream from it for the candidate to prove
    /// it has every acknowledged commit: stopping would only leave the cluster without a primary
    /// until the leader took its own lock back (see [`SyncRule::handover_refusal`]).
    fn handover_refusal(&self, cluster: &Cluster, f: &crate::model::Failover, r: &RunningPg) -> Option<String> {
        if f.force {
            return None;
        }
        let rule = SyncRule::of(&self.config, cluster)?;
        let streaming: Vec<&str> = r
            .walsenders
            .iter()
            .filter(|w| w.state == WalsenderState::Streaming)
            .map(|w| w.application_name.as_str())
            .collect();
        let why = rule.handover_refusal(f.member.as_deref(), &streaming)?;
        Some(match &f.member {
            Some(m) => format!("switchover to {m} refused: {why}"),
            None => format!("switchover refused: {why}"),
        })
    }

    /// Why the running leader refuses the request in the `failover` key (rule:
    /// [`admission`]), whoever wrote it. A key may name neither leader nor candidate (a
    /// switchover to the healthiest replica) or schedule a failover: Patroni's leader accepts
    /// both, so only what the key asks in maintenance mode and against the cluster is judged.
    fn admission_refusal(&self, cluster: &Cluster, f: &crate::model::Failover) -> Option<String> {
        let r = admission::Request::of_key(f);
        let shape = admission::check_shape(&r, self.config.paused()).err().filter(|e| {
            !matches!(
                e,
                Refusal::FailoverWithoutCandidate | Refusal::SwitchoverWithoutLeader | Refusal::FailoverScheduled
            )
        });
        let refusal = shape.or_else(|| admission::check_cluster(cluster, self.config.sync_mode(), &r).err())?;
        Some(match f.member.as_deref() {
            Some(m) => format!("{} to {m} refused: {refusal}", r.kind.name()),
            None => format!("{} refused: {refusal}", r.kind.name()),
        })
    }

    /// The slots this member should hold (see [`crate::slots`]): on the running primary a slot
    /// for each member streaming from it, elsewhere one for every other member; the slots of
    /// members that left less than `member_slots_ttl` ago; the permanent slots everywhere. Also
    /// records what the leader published as managed.
    fn slot_targets(&mut self, now: Millis, cluster: &Cluster, primary: bool) -> SlotTargets {
        let status = &cluster.status;
        self.slots_seen.extend(status.retain_slots.iter().chain(status.slots.keys()).cloned());
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
            self.retained.clear();
            self.retained_seeded = false;
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
            managed: if readable { self.slots_seen.clone() } else { Default::default() },
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
    fn idle_slots(
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
    fn replica_slot_targets(&mut self, now: Millis, cluster: &Cluster) -> SlotTargets {
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
    fn retain_member_slots(
        &mut self,
        now: Millis,
        status: &crate::model::Status,
        present: &std::collections::BTreeSet<String>,
        permanent: &BTreeMap<String, SlotKind>,
        ttl_secs: u64,
    ) -> Vec<String> {
        if !self.retained_seeded {
            self.retained_seeded = true;
            for name in &status.retain_slots {
                self.retained.insert(name.clone(), now);
            }
        }
        // Our own name counts as present even before our member key is back.
        let own = slot_name_from_member_name(&self.s.name);
        let present: Vec<&String> = present.iter().chain([&own]).collect();
        for name in &present {
            self.retained.insert((*name).clone(), now);
        }
        self.retained.retain(|name, seen| !permanent.contains_key(name) && now < seen.plus_secs(ttl_secs));
        // With a ttl of 0 the present members' names expire at once too; they are still published.
        let mut out: std::collections::BTreeSet<String> = self.retained.keys().cloned().collect();
        out.extend(present.into_iter().filter(|n| !permanent.contains_key(*n)).cloned());
        out.into_iter().collect()
    }

    /// A replica that lacks logical slots the leader has: restart it with copies of them, read
    /// from the leader even when it streams through a cascade (as Patroni does: the cascade
    /// passes its `hot_standby_feedback` on, so the primary keeps the catalog rows the copies
    /// need). Not in maintenance mode, not before it follows its upstream, and a slot copied less
    /// than a minute ago does not cause another restart, so a copy that keeps failing cannot keep
    /// restarting the replica (a newly configured slot is still copied at once).
    fn copy_logical_slots(
        &mut self,
        now: Millis,
        r: &RunningPg,
        cluster: &Cluster,
        upstream: &Upstream,
        leader: &str,
        target: &(String, u16),
    ) -> Option<Plan> {
        self.slots_copied.retain(|_, at| now < at.plus_ms(SLOT_COPY_INTERVAL_MS));
        let ready = self.slots_to_copy.iter().any(|s| !self.slots_copied.contains_key(s))
            && !self.config.paused()
            && r.upstream.as_ref() == Some(target);
        if !ready {
            return None;
        }
        let from = upstream_of(cluster, leader)?;
        let slots = std::mem::take(&mut self.slots_to_copy);
        for s in &slots {
            self.slots_copied.insert(s.clone(), now);
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
    fn streams_from_nowhere(&self, cluster: &Cluster) -> bool {
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
    fn other_members(&self, cluster: &Cluster) -> Vec<String> {
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

    fn plan(&self, now: Millis, actions: Vec<Action>, message: &str) -> Plan {
        // Steps whose outcome changes what to do next are followed by an immediate new cycle.
        let urgent = actions.iter().any(|a| {
            matches!(
                a,
                Action::TryInitialize
                    | Action::AcquireLeader
                    | Action::Stop(_)
                    | Action::WipeDataDir
                    | Action::RecordInitialize { .. }
                    | Action::ReleaseLeader
                    | Action::CancelInitialize
                    | Action::ClearFailover
            )
        });
        let mut next = if urgent { now } else { now.plus_secs(self.config.loop_wait) };
        // A synchronous standby enters the `sync` key a cycle after PostgreSQL starts waiting for
        // it: look again soon rather than after a whole loop_wait.
        if actions.iter().any(|a| matches!(a, Action::SetSynchronousStandbyNames(_) | Action::WriteSync { .. })) {
            next = next.min(now.plus_ms(SYNC_FOLLOW_UP_MS));
        }
        if let Some(d) = self.fence_deadline() {
            next = next.min(d);
        }
        Plan { actions, answer: None, message: message.to_string(), next_cycle: next }
    }
}

/// Whether the member we stream from says it is a replica itself (cascading, or a lock holder that
/// never got promoted): then our streaming proves no live primary.
fn upstream_is_a_replica(cluster: &Cluster, peers: &[PeerReport], upstream: Option<&(String, u16)>) -> bool {
    let Some(up) = upstream else { return false };
    let Some(member) = cluster.members.iter().find(|m| m.data.conn_host_port().as_ref() == Some(up)) else {
        return false;
    };
    peers.iter().any(|p| p.name == member.name && p.status.as_ref().is_some_and(|s| !s.is_primary))
}

/// Seconds before the next pg_rewind after `failures` in a row that left the data directory as
/// it was: a loop_wait, doubling, at most 5 minutes (a cause that lasts, such as `wal_log_hints`
/// off, is then retried and logged every 5 minutes rather than every loop).
fn rewind_retry_secs(loop_wait: u64, failures: u32) -> u64 {
    const MAX: u64 = 300;
    loop_wait.max(1).saturating_mul(1u64 << failures.min(16)).min(MAX)
}

/// `plan` carrying the answer to the operator's request.
fn with_answer(mut plan: Plan, answer: Answer) -> Plan {
    plan.answer = Some(answer);
    plan
}

/// The upstream description of member `name`, if it published a usable `conn_url`.
/// A stopped data directory whose WAL went on, on an older timeline, past the point where the
/// leader's history forked off it: PostgreSQL refuses to follow the leader ("requested timeline
/// is not a child of this server's history") until pg_rewind. A former primary demoted while
/// the DCS was away, started read-only and stopped, looks like a replica in its control file and
/// is caught only here. Each (timeline, position) pair of the control file is judged on its own,
/// as each holds together. Returns what was found.
fn stopped_past_fork(ctl: &ControlData, cluster: &Cluster) -> Option<String> {
    ctl.wal_ends().into_iter().find_map(|(timeline, at)| {
        let fork = cluster.passed_fork(timeline, at)?;
        Some(format!(
            "its WAL reached {at} on timeline {timeline}, past where the leader's timeline forked off it ({fork})"
        ))
    })
}

fn upstream_of(cluster: &Cluster, name: &str) -> Option<Upstream> {
    let m = cluster.member(name)?;
    let (host, port) = m.data.conn_host_port()?;
    Some(Upstream { name: name.to_string(), host, port })
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;

/// A member that could take over from a leader whose PostgreSQL is down (Patroni's
/// `is_failover_possible`, from what the member keys say): another running replica that may fail
/// over.
fn failover_heir<'a>(cluster: &'a Cluster, me: &str) -> Option<&'a str> {
    cluster
        .members
        .iter()
        .filter(|m| m.name != me && m.data.tags.can_fail_over())
        .find(|m| matches!(m.data.state.as_str(), "running" | "streaming") && m.data.role != Role::Primary)
        .map(|m| m.name.as_str())
}
