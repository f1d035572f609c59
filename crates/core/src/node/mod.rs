//! The per-cycle decision: one node's HA state machine.
//!
//! [`HaNode::decide`] is a pure function of the observation and the node's small memory (when
//! its lock was last confirmed, whether it won the bootstrap race, whether a rewind already ran).
//! It follows Patroni's ordered decision list: background job in progress, DCS unreachable, data
//! directory empty (bootstrap or clone), system-identifier check, PostgreSQL not running
//! (restart in place, rewind, start as replica), PostgreSQL running (leader renews, replicas
//! follow, the healthiest races when there is no leader).
//!
//! Where each part lives: this file holds the node's memory, the ordered decision list
//! ([`HaNode::decide`]) and the plan's pacing; `jobs` what follows a background job;
//! `dcs_outage` a cycle without the DCS; `stopped` an empty or stopped data directory (bootstrap,
//! clone, start, rewind, the stopped leader's handover); `running` a running server, split into
//! the leader's, a follower's and the no-leader path, as Patroni's `_run_cycle`; `leader` the
//! leader's synchronous replication and request admission; `follower` whom a replica streams
//! from; `slots` the slot bookkeeping; `requests` operators' restarts and reinitializations.
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
use crate::drain::{self, DrainStep};
use crate::dynamic::DynamicConfig;
use crate::election::{self, Candidate, Verdict};
use crate::failsafe::{self, Topology};
use crate::hot_standby;
use crate::manual::{self, LeaderStep, ReleaseStep, ReplicaStep};
use crate::model::{Cluster, Tags};
use crate::observe::{
    ControlData, DataDir, DcsView, JobError, JobKind, JobState, LocalPg, Millis, Observation, PeerReport, PgProcess,
    Request, RunningPg,
};
use crate::roles::{PgState, Role, WalsenderState};
use crate::slots::{slot_name_from_member_name, SlotKind, SlotTargets};
use crate::sync::{self, LeaderSync};
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
    /// Dynamic configuration last seen in the DCS (kept for cycles where the DCS is unreachable).
    config: DynamicConfig,
    /// The leader lock as this process last confirmed it.
    lease: Lease,
    /// Bootstrap, start and restart in place.
    start: StartMemory,
    /// Rewind and divergence from the leader's timeline.
    rewind: RewindMemory,
    /// Switchovers and refused promotions.
    handover: HandoverMemory,
    /// Synchronous replication, while leading.
    sync: SyncMemory,
    /// The local server's configuration files and role.
    server: ServerMemory,
    /// Replication slot bookkeeping.
    slots: SlotMemory,
    /// Failsafe mode.
    failsafe: FailsafeMemory,
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
            lease: Lease { leader_until: None, ttl: config.ttl },
            config,
            start: Default::default(),
            rewind: Default::default(),
            handover: Default::default(),
            sync: Default::default(),
            server: Default::default(),
            slots: Default::default(),
            failsafe: Default::default(),
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
        cluster.is_leader(&self.s.name) && self.lease.leader_until.is_some()
    }

    /// Until when the lock is ours, if we hold it.
    pub fn leader_until(&self) -> Option<Millis> {
        self.lease.leader_until
    }

    /// The instant by which a primary must have stopped taking writes if its lock has not been
    /// confirmed again. The driver bounds every DCS call so that it returns before this.
    pub fn fence_deadline(&self) -> Option<Millis> {
        self.lease.leader_until.map(|u| Millis(u.0.saturating_sub(fence_margin_ms(self.lease.ttl))))
    }

    /// Failsafe mode with the DCS unreachable: the members the driver must `POST /failsafe` to
    /// this cycle (ourselves included; the driver skips us). `None` when this node does not lead
    /// in failsafe mode.
    pub fn failsafe_targets(&self) -> Option<&Topology> {
        if !self.config.failsafe_mode() || self.lease.leader_until.is_none() {
            return None;
        }
        self.failsafe.failsafe_targets.as_ref().filter(|t| t.contains_key(&self.s.name))
    }

    /// Whether this leader runs on the strength of its members' promises at `now` (the DCS is
    /// unreachable and the last failsafe round was accepted by everyone): Patroni's
    /// `failsafe_mode_is_active`.
    pub fn failsafe_active(&self, now: Millis) -> bool {
        self.failsafe.failsafe_active_until.is_some_and(|u| now < u)
    }

    /// Whether this node keeps out of leader races at `now` (a promotion of its was refused by
    /// `pre_promote`). Published, so that the others do not wait for it.
    pub fn race_backoff(&self, now: Millis) -> bool {
        self.handover.no_race_until.is_some_and(|u| now < u)
    }

    /// Whether this node may present itself as leader at `now`.
    pub fn believed(&self, now: Millis) -> Believed {
        match self.lease.leader_until {
            Some(u) if now < u => Believed::Leader,
            _ => Believed::NotLeader,
        }
    }

    /// Whether this node is a standby cluster's standby leader at `now`, its role published as
    /// `standby_leader`: it may present itself as leader ([`HaNode::believed`]), the cluster is a
    /// standby cluster, and its server is not a primary (one that `demote-cluster` is about to
    /// restart is still published as the primary it is).
    pub fn standby_leader(&self, local: &LocalPg, now: Millis) -> bool {
        self.believed(now) == Believed::Leader && self.standby().is_some() && !local.process.is_primary()
    }

    /// The `synchronous_standby_names` postgresql.conf must carry in synchronous mode (`None`:
    /// the configuration's own value). See [`HaNode::observe_sync_names`].
    pub fn managed_sync_names(&self) -> Option<&str> {
        self.sync.managed_names.as_deref()
    }

    /// Keeps the managed `synchronous_standby_names` in step with the mode and the server: it is
    /// forgotten when synchronous mode is off (the user's value applies again), and taken from a
    /// running primary when not known yet (after an agent restart), so that rewriting
    /// postgresql.conf never changes it by accident. The driver calls it on every observation
    /// of the server, before it renders the configuration.
    pub fn observe_sync_names(&mut self, local: &LocalPg) {
        if !self.config.sync_mode().is_active() {
            self.sync.managed_names = None;
        } else if self.sync.managed_names.is_none() {
            if let PgProcess::Running(r) = &local.process {
                if !r.in_recovery {
                    self.sync.managed_names = Some(r.synchronous_standby_names.clone());
                }
            }
        }
    }

    /// Where a running replica's configuration streams from, for a rewrite of its files: the
    /// upstream they were last written for, or (after an agent restart) the member whose host
    /// and port its `primary_conninfo` names. `None` when not a running replica or unknown (a
    /// replica's recovery settings are then left as they are).
    pub fn replica_upstream(&mut self, local: &LocalPg, cluster: Option<&Cluster>) -> Option<Upstream> {
        let PgProcess::Running(r) = &local.process else { return None };
        if !r.in_recovery {
            return None;
        }
        match &self.server.configured {
            Some(StartRole::Replica { upstream: Some(u) }) => return Some(u.clone()),
            Some(StartRole::Replica { upstream: None }) => return None,
            _ => {}
        }
        let (host, port) = r.upstream.clone()?;
        let m = cluster?.members.iter().find(|m| m.data.conn_host_port().as_ref() == Some(&(host.clone(), port)))?;
        let u = Upstream { name: m.name.clone(), host, port };
        self.server.configured = Some(StartRole::Replica { upstream: Some(u.clone()) });
        Some(u)
    }

    /// The role a running server's configuration files are rewritten for (changed parameters,
    /// `synchronous_standby_names`): the primary's out of recovery; in recovery the standby
    /// leader's when they were last written for it, else a replica's of its
    /// [`HaNode::replica_upstream`]. `None`: not running, or a replica whose upstream is unknown
    /// (its recovery settings are then left as they are).
    pub fn running_role(&mut self, local: &LocalPg, cluster: Option<&Cluster>) -> Option<StartRole> {
        let PgProcess::Running(r) = &local.process else { return None };
        if !r.in_recovery {
            return Some(StartRole::Primary);
        }
        if let Some(role @ StartRole::StandbyLeader(_)) = &self.server.configured {
            return Some(role.clone());
        }
        self.replica_upstream(local, cluster).map(|u| StartRole::Replica { upstream: Some(u) })
    }

    /// `on_role_change`: the role the server runs in now, when it ran in the other one when last
    /// seen running (a server that does not answer changes nothing).
    pub fn role_change(&mut self, local: &LocalPg) -> Option<Role> {
        let PgProcess::Running(r) = &local.process else { return None };
        let now = match (r.in_recovery, &self.server.configured) {
            (false, _) => Role::Primary,
            (true, Some(StartRole::StandbyLeader(_))) => Role::StandbyLeader,
            (true, _) => Role::Replica,
        };
        let before = self.server.seen_role.replace(now.clone());
        before.filter(|b| *b != now).map(|_| now)
    }

    /// The role `on_start`, `on_restart` and `on_reload` report: the one the configuration was
    /// written for, else the one the server last ran in, else primary.
    pub fn callback_role(&self) -> Role {
        match (&self.server.configured, &self.server.seen_role) {
            (Some(StartRole::Replica { .. }), _) => Role::Replica,
            (Some(StartRole::StandbyLeader(_)), _) => Role::StandbyLeader,
            (Some(StartRole::Primary), _) => Role::Primary,
            (None, Some(seen)) => seen.clone(),
            (None, None) => Role::Primary,
        }
    }

    /// Records the result of an action.
    pub fn advance(&mut self, result: ActionResult) {
        match result {
            ActionResult::InitializeRace { won } => self.start.won_initialize = won,
            ActionResult::Leader { held: true, sent_at, ttl_secs } => {
                self.lease.leader_until = Some(sent_at.plus_secs(ttl_secs));
                self.lease.ttl = ttl_secs;
            }
            ActionResult::Leader { held: false, .. } => self.lease.leader_until = None,
            ActionResult::LeaderReleased => self.lease.leader_until = None,
            ActionResult::SyncNamesUnconfirmed(v) => self.sync.sync_names_unconfirmed = Some(v),
            ActionResult::SyncNamesWritten(v) => self.sync.managed_names = Some(v),
            ActionResult::Configured(role) => self.server.configured = Some(role),
            ActionResult::SlotsSynced { existing, missing } => self.slots_synced(existing, missing),
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
            DcsView::Unavailable(_) => self.lease.leader_until.is_some(),
        };
        if holds {
            actions.push(release_leader(obs));
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
        let mut plan = self.in_standby_cluster(obs.now, plan);
        plan.holds_address = crate::address::may_hold(self.fence_deadline(), obs.now, obs.local, &plan.actions);
        plan
    }

    /// The standby cluster this one is, when `standby_cluster` is set and can be read.
    pub(super) fn standby(&self) -> Option<crate::standby_cluster::StandbyCluster> {
        self.config.standby().ok().flatten()
    }

    /// A standby cluster never gets a writable primary (rules: [`crate::standby_cluster::net`],
    /// and [`crate::standby_cluster::gate`] for a section that cannot be read, which also takes
    /// no lock).
    fn in_standby_cluster(&mut self, now: Millis, plan: Plan) -> Plan {
        let (actions, why) = match self.config.standby() {
            Ok(None) => return plan,
            Ok(Some(sc)) => match crate::standby_cluster::net(&plan.actions) {
                Some(actions) => (actions, format!("following {}", sc.describe())),
                None => return plan,
            },
            Err((key, why)) => match crate::standby_cluster::gate(&plan.actions) {
                Some(actions) => (actions, format!("its standby_cluster section cannot be read: {why} ({key})")),
                None => return plan,
            },
        };
        let answer = plan.answer.as_ref().map(|_| crate::standby_cluster::refused_answer(&why));
        let mut gated = self.plan(
            now,
            actions,
            &format!("this is a standby cluster ({why}): no member may become a writable primary ({})", plan.message),
        );
        gated.answer = answer;
        gated
    }

    /// `watchdog.mode: required` with a watchdog that cannot be armed: no lock is taken or kept
    /// (rule: [`crate::watchdog::required_gate`]). A released lock also keeps this member out of
    /// the race for a ttl, so it does not take the lock back at once.
    fn without_watchdog(&mut self, obs: &Observation<'_>, plan: Plan, why: &str) -> Plan {
        let holds = self.lease.leader_until.is_some_and(|u| obs.now < u)
            || matches!(&obs.dcs, DcsView::Ok(c) if c.is_leader(&self.s.name));
        let running_job = matches!(obs.job, Some(JobState::Running(_)));
        let Some(actions) = crate::watchdog::required_gate(
            holds,
            obs.local.process.is_primary(),
            running_job,
            obs.local.last_position(),
            &plan.actions,
        ) else {
            return plan;
        };
        let what = if holds {
            self.handover.no_race_until = Some(obs.now.plus_secs(self.config.ttl));
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
                self.lease.leader_until = None;
                self.handover.drain_since = None;
            }
            self.failsafe.failsafe_active_until = None;
            // With the DCS back, the usual rules decide how the server runs again.
            self.start.offline_demoted = false;
            self.failsafe.failsafe_targets =
                (self.config.failsafe_mode() && c.is_leader(&self.s.name)).then(|| failsafe::targets_of(c));
            self.failsafe.last_cluster = self.config.failsafe_mode().then(|| (*c).clone());
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
            // A setting left unconfirmed belongs to that run too: a later leadership must not
            // re-apply it before deciding afresh.
            self.sync.forget();
        }
        let now = obs.now;

        // Fencing comes before everything else, including a running job: a live PostgreSQL
        // must not outlive a lock we can no longer vouch for.
        if let (Some(deadline), true) = (self.fence_deadline(), obs.local.process.is_alive()) {
            if now >= deadline && !self.config.paused() {
                self.lease.leader_until = None;
                self.start.offline_demoted = true;
                return self.plan(
                    now,
                    vec![Action::Stop(StopMode::Immediate)],
                    "demoting: the leader lock could not be renewed before its lease runs out; stopped PostgreSQL",
                );
            }
        }
        // Nothing left to fence (PostgreSQL is not running), or the lease itself has run out: the
        // lock is given up all the same. Kept, its deadline would keep every DCS call's deadline
        // in the past, and a leader whose PostgreSQL died while the DCS was away could never read
        // the DCS again (the simulation found one wedged so).
        let fenced = self.fence_deadline().is_some_and(|d| now >= d) && !obs.local.process.is_alive();
        if fenced || self.lease.leader_until.is_some_and(|u| now >= u) {
            self.lease.leader_until = None;
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
                actions.push(release_leader(obs));
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
                    actions.push(release_leader(obs));
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
                    | Action::ReleaseLeader { .. }
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
        Plan { actions, answer: None, message: message.to_string(), next_cycle: next, holds_address: false }
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
/// Giving the lock up, publishing our last WAL position ([`LocalPg::last_position`]).
fn release_leader(obs: &Observation<'_>) -> Action {
    Action::ReleaseLeader { last_position: obs.local.last_position() }
}

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

mod dcs_outage;
mod follower;
mod jobs;
mod leader;
mod memory;
mod requests;
mod running;
mod slots;
mod stopped;

use memory::{FailsafeMemory, HandoverMemory, Lease, RewindMemory, ServerMemory, SlotMemory, StartMemory, SyncMemory};

#[cfg(test)]
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
