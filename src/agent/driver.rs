//! The agent's Ready loop: observe, let the core decide, execute, publish, sleep.
//!
//! Each cycle re-reads the whole cluster from the DCS and probes PostgreSQL; the etcd watch, the
//! postmaster's exit and the end of a job only wake the loop early. Every DCS call carries a
//! deadline no later than the core's fence deadline, so a leader that cannot reach the DCS gets
//! back to the core in time to stop taking writes.
//!
//! A stop signal ends the loop at once, wherever it waits (see [`Agent::run`] and
//! [`Agent::shutdown`] for why dropping a cycle half-way is safe); the shutdown then asks the core
//! what to do and gives each DCS call a short bound, so an unreachable etcd cannot hold the exit.
//!
//! Invariant: this module holds no HA policy. It executes the core's actions in order, stops at
//! the first failure (the next cycle decides again on fresh facts), and stops at once when a
//! lock operation reports that the lock is not ours, so nothing after a failed renewal (such as
//! a promotion) can run. Likewise a lost compare-and-swap on the `sync` key stops the plan, so
//! the change of `synchronous_standby_names` that was to follow it never happens out of order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use rampart_api::NodeSnapshot;
use rampart_config::Config;
use rampart_core::model::Status;
use rampart_core::observe::{DcsView, JobKind, JobState, LocalPg, Observation, PeerReport};
use rampart_core::{Action, ActionResult, Cluster, DataDir, HaNode, Millis, PgProcess, Plan, StartRole, StopMode};
use rampart_dcs::Dcs;
use rampart_pg::PgSettings;
use rampart_pg::Probe;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backend::Queued;
use super::jobs::{JobContext, RunningJob};
use super::ports::{Control, DataFiles, PortSet, Ports, Server, WallClock};
use super::signals::{Hangups, StopSignal, StopWatch};
use super::watchdog::Watchdog;
use super::{callbacks, peers, publish, settings};
use crate::vip::keeper::AddressKeeper;

mod failsafe;
mod params;
pub(in crate::agent) mod reload;
mod requests;
#[cfg(test)]
mod tests;

/// Shortest pause between two cycles, so a condition that asks for an immediate re-run every
/// time cannot spin the CPU.
const MIN_CYCLE_GAP: Duration = Duration::from_millis(100);
/// How long a cycle waits for the watch to confirm that its copy of the cluster has caught up
/// with what the cycle's keep-alive saw, when it must ask, before it reads etcd instead (one
/// round trip on a healthy stream).
const COPY_CATCH_UP_WAIT: Duration = Duration::from_millis(250);
/// How long a clean stop of PostgreSQL may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of each step's DCS calls once the agent is shutting down (instead of `retry_timeout`):
/// with etcd unreachable the agent exits a few seconds after PostgreSQL has stopped.
const SHUTDOWN_DCS_BOUND: Duration = Duration::from_secs(2);
/// Shortest time between two warnings that `standby_cluster` is set.
const STANDBY_CLUSTER_WARN_EVERY: Duration = Duration::from_secs(60);
/// How long a reloaded `synchronous_standby_names` may take to show in the server.
const SYNC_NAMES_APPLY_LIMIT: Duration = Duration::from_secs(3);
/// The longest giving up the virtual address may take (`if_down_cmd` included); a leader's is
/// bounded by the end of its lease as well.
const ADDRESS_GIVE_UP_LIMIT: Duration = Duration::from_secs(10);

/// What one cycle saw, kept for publishing.
struct Seen {
    local: LocalPg,
    probe: Option<Probe>,
    cluster: Option<Arc<Cluster>>,
    job: Option<JobKind>,
}

/// The running agent, over its ports `P` ([`super::ports`]).
pub struct Agent<P: Ports> {
    cfg: Config,
    dcs: P::Dcs,
    /// The local PostgreSQL: postmaster, control connection, files, jobs.
    pg: P::Pg,
    clock: P::Clock,
    core: HaNode,
    origin: Instant,
    job: Option<RunningJob>,
    wake: Arc<Notify>,
    snap: watch::Sender<NodeSnapshot>,
    probe: Arc<dyn rampart_api::MemberProbe>,
    dcs_last_seen: Option<u64>,
    last_message: String,
    /// Where the configuration was read from, with the start's overrides (re-read on reload).
    config_source: reload::ConfigSource,
    /// The REST API's security settings in force (replaced on reload).
    api_security: rampart_api::SecurityHandle,
    /// The REST API's own connection for live WAL positions (reconnected on reload).
    live_sql: Option<Arc<super::live_wal::LiveSql>>,
    /// An etcd write of this cycle failed (it waited its deadline).
    dcs_trouble: bool,
    /// Set once a stop signal has arrived: further stop signals escalate the stop of PostgreSQL.
    stopping: Option<StopWatch>,
    /// While shutting down: the deadline of the current step's DCS calls.
    shutdown_dcs_until: Option<Instant>,
    /// Operators' local requests from the REST API.
    requests: mpsc::Receiver<Queued>,
    /// State of local requests and scheduled restarts.
    local: requests::LocalState,
    /// What was last written into postgresql.conf, and whether a restart is pending.
    params: params::ParamState,
    /// Failsafe pings this member accepted (written by the REST API).
    failsafe_inbox: super::failsafe::Inbox,
    /// The leader's watchdog (armed only while leading a primary).
    watchdog: Watchdog<P::Watchdog>,
    /// The virtual address (`vip`), when configured.
    address: Option<AddressKeeper<P::Address>>,
    /// Which rule holds the address (the core's).
    address_rule: AddressRule,
    /// Whether the leader key named this member when the DCS last answered.
    leader_key_names_me: bool,
    /// When the watchdog must be armed.
    watchdog_rules: WatchdogRules,
    /// The hot-standby-critical settings of the control file, as last observed: a replica's
    /// configuration is written with at least these.
    control: rampart_core::hot_standby::Values,
    /// When the agent last warned that `standby_cluster` is set (at most once a minute).
    standby_cluster_warned: Option<Instant>,
    /// The DCS `failsafe` key as last read, kept through DCS outages (`GET /failsafe`).
    last_failsafe: Option<rampart_core::failsafe::Topology>,
}

impl<P: Ports> Agent<P> {
    /// Builds the agent over `ports`; nothing is touched yet.
    pub fn new(
        cfg: Config,
        config_source: reload::ConfigSource,
        ports: PortSet<P>,
        snap: watch::Sender<NodeSnapshot>,
        wake: Arc<Notify>,
        requests: mpsc::Receiver<Queued>,
    ) -> Agent<P> {
        let node = settings::node_settings(&cfg);
        let address = ports.address.zip(cfg.vip.as_ref()).map(|(port, vip)| AddressKeeper::new(port, vip));
        let mut watchdog = Watchdog::new(cfg.watchdog.clone(), ports.watchdog);
        watchdog.check_at_start(node.bootstrap_dcs.ttl);
        let core = HaNode::new(node);
        let probe = ports.peers;
        Agent {
            watchdog,
            address,
            address_rule: AddressRule::CORE,
            leader_key_names_me: false,
            watchdog_rules: WatchdogRules::CORE,
            cfg,
            dcs: ports.dcs,
            pg: ports.pg,
            clock: ports.clock,
            core,
            origin: Instant::now(),
            job: None,
            wake,
            snap,
            probe,
            dcs_last_seen: None,
            last_message: String::new(),
            config_source,
            api_security: Default::default(),
            live_sql: None,
            dcs_trouble: false,
            stopping: None,
            shutdown_dcs_until: None,
            requests,
            local: requests::LocalState::default(),
            params: params::ParamState::default(),
            failsafe_inbox: Default::default(),
            control: Default::default(),
            standby_cluster_warned: None,
            last_failsafe: None,
        }
    }

    /// PostgreSQL settings in force: the configuration's, with the leader-managed
    /// `synchronous_standby_names` in synchronous mode.
    fn pg_settings(&self) -> PgSettings {
        let dynamic = self.core.config();
        let mut s = settings::pg_settings(&self.cfg, dynamic);
        settings::with_managed_sync_names(&mut s.parameters, dynamic, self.core.managed_sync_names());
        s
    }

    /// [`Agent::pg_settings`] for running as `role`: a replica's hot-standby-critical settings
    /// raised to the control file's (see [`settings::for_role`]).
    pub(in crate::agent) fn pg_settings_for(&self, role: &StartRole) -> PgSettings {
        settings::for_role(self.pg_settings(), role, &self.control).0
    }

    fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    fn instant(&self, m: Millis) -> Instant {
        self.origin + Duration::from_millis(m.0)
    }

    /// Deadline for DCS calls this cycle: `retry_timeout` from now, but never past the moment
    /// the core must fence (so a hanging etcd cannot delay fencing), nor past the current step's
    /// bound while shutting down.
    fn dcs_deadline(&self) -> Instant {
        let retry = Instant::now() + Duration::from_secs(self.core.config().retry_timeout);
        let deadline = match self.core.fence_deadline() {
            Some(f) => retry.min(self.instant(f)),
            None => retry,
        };
        match self.shutdown_dcs_until {
            Some(bound) => deadline.min(bound),
            None => deadline,
        }
    }

    /// Applies other watchdog rules than the core's (the simulation's negative control).
    #[cfg(test)]
    pub fn with_watchdog_rules(mut self, rules: WatchdogRules) -> Self {
        self.watchdog_rules = rules;
        self
    }

    /// Holds the virtual address by another rule than the core's (the simulation's negative
    /// control).
    #[cfg(test)]
    pub fn with_address_rule(mut self, rule: AddressRule) -> Self {
        self.address_rule = rule;
        self
    }

    /// Sets the REST API's live-WAL connection, which a reload updates.
    pub fn with_live_sql(mut self, live: Arc<super::live_wal::LiveSql>) -> Self {
        self.live_sql = Some(live);
        self
    }

    /// Sets the REST API's security handle, which a reload updates.
    pub fn with_api_security(mut self, handle: rampart_api::SecurityHandle) -> Self {
        self.api_security = handle;
        self
    }

    /// Runs until SIGTERM or SIGINT, then shuts down cleanly; SIGHUP reloads the configuration.
    ///
    /// The stop signal is raced against the whole turn, so it is seen at once even while a
    /// cycle waits for etcd (each DCS call may wait `retry_timeout`): the turn is dropped where it
    /// waits and [`Agent::shutdown`] takes over.
    pub async fn run(mut self, mut stops: StopWatch, mut hangups: Hangups) -> Result<()> {
        let mut pm_state = self.pg.state_changes();
        self.pg.adopt();
        loop {
            tokio::select! {
                biased;
                signal = stops.requested() => return self.shutdown(signal, stops).await,
                turn = self.turn(&mut pm_state, &mut hangups) => turn?,
            }
        }
    }

    /// One cycle, then the wait for the next one, serving operators' requests and reloads.
    async fn turn(
        &mut self,
        pm_state: &mut watch::Receiver<rampart_pg::PostmasterState>,
        hangups: &mut Hangups,
    ) -> Result<()> {
        let started = Instant::now();
        let plan = self.cycle().await?;
        // Cycles are at least MIN_CYCLE_GAP apart (counted from the start of the previous
        // one), so a wake-up right after a quiet cycle costs no added delay.
        let earliest = started + MIN_CYCLE_GAP;
        let next = self.instant(plan.next_cycle).max(earliest);
        // Biased, so that a run over virtual time is deterministic (which of two ready branches
        // goes first would otherwise be drawn at random).
        tokio::select! {
            biased;
            _ = hangups.recv() => {
                // Applied at the next cycle; the outcome is in the log (SIGHUP has no one to answer).
                self.reload("SIGHUP").await;
                self.wake.notify_one();
            }
            Some(q) = self.requests.recv() => self.on_local_request(q).await,
            _ = tokio::time::sleep_until(next) => {}
            _ = self.wake.notified() => { tokio::time::sleep_until(earliest).await; }
            _ = pm_state.changed() => {
                debug!("postmaster state changed");
                tokio::time::sleep_until(earliest).await;
            }
        }
        Ok(())
    }

    /// Observes local PostgreSQL and the job.
    async fn observe_local(&mut self) -> (LocalPg, Option<Probe>, Option<JobState>) {
        let settings = self.pg_settings();
        let (local, probe) = self.pg.observe(&settings).await;
        if let DataDir::Initialized(c) = &local.data {
            self.control = c.hot_standby.clone();
        }
        self.core.observe_sync_names(&local);
        let job = match &mut self.job {
            Some(j) => Some(j.poll().await),
            None => None,
        };
        if let Some(JobState::Finished(kind, result)) = &job {
            self.job = None;
            self.job_finished(*kind, result);
        }
        (local, probe, job)
    }

    /// This cycle's view of the cluster: after one keep-alive of the lease, the watch-fed copy
    /// when it is current as of that keep-alive and the core lets this cycle decide on it
    /// ([`rampart_core::cached_view`]), otherwise a linearizable read. `local` is `None`
    /// when stopping (always a read).
    async fn read_cluster(&mut self, local: Option<&LocalPg>) -> Result<Arc<Cluster>, String> {
        // Not when stopping: the lease outlives the agent only as long as its ttl, which is fine.
        let mut read_deadline = None;
        let mut kept = None;
        if self.stopping.is_none() {
            let deadline = self.dcs_deadline();
            match self.dcs.refresh_lease(deadline).await {
                Ok(k) => kept = Some(k),
                Err(e) => {
                    debug!(error = %e, "lease refresh failed");
                    // An etcd that did not answer the refresh gets the rest of the same budget
                    // for the read, not a second one: a cycle that finds etcd down ends after
                    // retry_timeout, as Patroni's does, so failsafe mode (or fencing) starts no
                    // later.
                    read_deadline = Some(deadline);
                }
            }
        }
        if let (Some(kept), Some(local)) = (kept, local) {
            if let Some(copy) = self.dcs.cached_cluster(&kept, COPY_CATCH_UP_WAIT).await {
                match rampart_core::cached_view::decide_on_copy(&copy, &self.cfg.name, local) {
                    Ok(()) => {
                        self.dcs_last_seen = u64::try_from(self.clock.unix_ms() / 1000).ok();
                        return Ok(Arc::new(copy));
                    }
                    Err(why) => debug!(reason = why.as_str(), "reading etcd before deciding"),
                }
            }
        }
        let read_deadline = read_deadline.unwrap_or_else(|| self.dcs_deadline());
        match self.dcs.read_cluster(read_deadline).await {
            Ok(c) => {
                for p in &c.problems {
                    warn!("DCS: {p}");
                }
                self.dcs_last_seen = u64::try_from(self.clock.unix_ms() / 1000).ok();
                Ok(Arc::new(c))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// One HA cycle.
    async fn cycle(&mut self) -> Result<Plan> {
        self.dcs_trouble = false;
        let (local, probe, job) = self.observe_local().await;
        let cluster = self.read_cluster(Some(&local)).await;
        let failsafe_round = self.failsafe_round(cluster.is_err(), &local).await;
        let failsafe_ping = self.failsafe_inbox.last(|t| self.millis_of(t));
        let peers = match &cluster {
            Ok(c) if rampart_core::election::wants_peer_reports(c, &local) => Some(self.fetch_peers(c).await),
            _ => None,
        };
        let dcs = match &cluster {
            Ok(c) => DcsView::Ok(c),
            Err(e) => DcsView::Unavailable(e.clone()),
        };
        self.due_scheduled_restart(probe.as_ref());
        let watchdog_unusable = self.watchdog.unusable(Instant::now(), self.core.config().ttl);
        let obs = Observation {
            now: self.now(),
            wall_clock_ms: self.clock.unix_ms(),
            request: self.local.pending_request(),
            dcs,
            local: &local,
            job: job.clone(),
            peers: peers.as_deref(),
            failsafe_round: failsafe_round.as_ref(),
            failsafe_ping: failsafe_ping.as_ref(),
            watchdog_unusable: watchdog_unusable.as_deref(),
        };
        // The lease as it stood before this cycle's decision (one that fences ends it).
        let lease_end = self.core.leader_until();
        let plan = self.core.decide(&obs);
        self.log_plan(&plan, cluster.is_err());
        self.warn_standby_cluster();
        // The lease follows the dynamic ttl; the change takes effect at the next lease write.
        self.dcs.set_ttl(self.core.config().ttl);
        let cluster = cluster.ok();
        if let Some(c) = &cluster {
            self.leader_key_names_me = c.is_leader(&self.cfg.name);
        }
        // Given up before the plan stops, demotes or hands over; taken once it has run (rule:
        // rampart_core::address::may_hold).
        let hold = (self.address_rule.0)(&plan, self.leader_key_names_me);
        if !hold {
            self.apply_address(false, lease_end).await;
        }
        self.execute(&plan, &local, probe.as_ref(), cluster.as_deref()).await?;
        if hold {
            self.apply_address(true, lease_end).await;
        }
        if let Some(answer) = &plan.answer {
            self.answer(answer);
        }
        if plan.lets_parameters_apply(self.job.is_some()) {
            self.apply_parameters(&local, probe.as_ref(), cluster.as_deref()).await;
        }
        let primary = (self.watchdog_rules.guards_a_primary)(&local.process, self.job.as_ref().map(RunningJob::kind));
        self.feed_watchdog(primary);
        let seen = Seen { local, probe, cluster, job: self.job.as_ref().map(RunningJob::kind) };
        self.publish(&seen).await;
        Ok(plan)
    }

    /// Makes the host hold the virtual address or not; giving it up must end before `lease_end`,
    /// when another member may take the lock (and the address).
    async fn apply_address(&mut self, hold: bool, lease_end: Option<Millis>) {
        let limit = match lease_end {
            Some(end) => self.instant(end).saturating_duration_since(Instant::now()),
            None => ADDRESS_GIVE_UP_LIMIT,
        };
        if let Some(a) = &mut self.address {
            a.apply(hold, limit.min(ADDRESS_GIVE_UP_LIMIT)).await;
        }
    }

    async fn fetch_peers(&self, c: &Cluster) -> Vec<PeerReport> {
        let others: Vec<_> = c.members.iter().filter(|m| m.name != self.cfg.name).cloned().collect();
        peers::fetch(&self.probe, &others).await
    }

    fn log_plan(&mut self, plan: &Plan, dcs_unavailable: bool) {
        // One line per cycle, as Patroni logs; repeats of a quiet steady state go to debug.
        // A cycle decided without the DCS is always worth a warning: the cluster is blind.
        if dcs_unavailable {
            warn!("{}", plan.message);
        } else if plan.message != self.last_message || !plan.actions.is_empty() {
            info!("{}", plan.message);
        } else {
            debug!("{}", plan.message);
        }
        self.last_message = plan.message.clone();
    }

    /// A `standby_cluster` section in the DCS that cannot be read (another tool wrote it): the
    /// core takes no lock and promotes nothing (rampart_core::standby_cluster::gate); say so every
    /// minute while it stays there.
    fn warn_standby_cluster(&mut self) {
        let Err((key, why)) = self.core.config().standby() else {
            self.standby_cluster_warned = None;
            return;
        };
        if self.standby_cluster_warned.is_some_and(|t| t.elapsed() < STANDBY_CLUSTER_WARN_EVERY) {
            return;
        }
        self.standby_cluster_warned = Some(Instant::now());
        warn!(
            "the standby_cluster section of the dynamic configuration cannot be read ({why} ({key})): this member \
             takes no leader lock, does not bootstrap and does not promote until it is mended"
        );
    }

    /// Points the running server at a new upstream: rewrites its files for `role`, reloads.
    async fn follow(&mut self, role: StartRole) -> Result<()> {
        let s = self.pg_settings_for(&role);
        self.pg.write_pgpass(&s)?;
        self.pg.write_config(&s, &role)?;
        self.pg.reload().await?;
        self.core.advance(ActionResult::Configured(role));
        Ok(())
    }

    fn job_context(&self, cluster: Option<&Cluster>) -> JobContext<P::Dcs> {
        let extra_users = self
            .cfg
            .bootstrap
            .users
            .iter()
            .map(|(name, u)| rampart_pg::ExtraUser {
                name: name.clone(),
                password: u.password.as_ref().map(|p| p.expose().to_string()),
                options: u.options.clone(),
            })
            .collect();
        JobContext {
            settings: self.pg_settings(),
            dcs: self.dcs.clone(),
            initdb_args: self.cfg.bootstrap.initdb.clone(),
            bootstrap_pg_hba: self.cfg.bootstrap.pg_hba.clone(),
            bootstrap_method: self.cfg.bootstrap.method.clone(),
            post_bootstrap: self.cfg.bootstrap.post_bootstrap.clone(),
            extra_users,
            known_history: cluster.map(|c| c.history.clone()).unwrap_or_default(),
            pre_promote: self.cfg.postgresql.pre_promote.clone(),
            scope: self.cfg.scope.clone(),
            replica_creation: self.cfg.postgresql.replica_creation.clone(),
        }
    }

    /// Executes the plan's actions in order.
    async fn execute(
        &mut self,
        plan: &Plan,
        local: &LocalPg,
        probe: Option<&Probe>,
        cluster: Option<&Cluster>,
    ) -> Result<()> {
        for action in &plan.actions {
            if self.stopping.is_some() {
                self.shutdown_dcs_until = Some(Instant::now() + SHUTDOWN_DCS_BOUND);
            }
            match self.execute_one(action, local, probe, cluster).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if matches!(action, Action::Fatal(_)) => return Err(e),
                Err(e) if self.stopping.is_some() => {
                    // Nothing after a failed step runs: a lock stays held until its ttl rather
                    // than being released while PostgreSQL may still run.
                    warn!(?action, error = %format!("{e:#}"), "action failed while shutting down; skipping the rest");
                    break;
                }
                Err(e) => {
                    // An etcd write that failed has already waited its deadline: the member key
                    // is not written after it this cycle (see `publish`).
                    self.dcs_trouble |= action.writes_dcs();
                    warn!(?action, error = %format!("{e:#}"), "action failed; deciding again next cycle");
                    self.wake.notify_one();
                    break;
                }
            }
        }
        Ok(())
    }

    /// Executes one action; `Ok(false)` stops the rest of the plan.
    async fn execute_one(
        &mut self,
        action: &Action,
        local: &LocalPg,
        probe: Option<&Probe>,
        cluster: Option<&Cluster>,
    ) -> Result<bool> {
        let sent = self.now();
        match action {
            Action::TryInitialize => {
                let won = self.dcs.try_initialize("", self.dcs_deadline()).await?;
                self.core.advance(ActionResult::InitializeRace { won });
                if !won {
                    info!("another member is initializing the cluster");
                }
                Ok(won)
            }
            Action::CancelInitialize => {
                info!("removing initialize key after failed attempt to bootstrap the cluster");
                self.dcs.cancel_initialize(self.dcs_deadline()).await?;
                self.pg.move_data_dir_aside(&self.cfg.postgresql.data_dir).await?;
                Ok(true)
            }
            Action::RecordInitialize { sysid } => {
                self.dcs.set_initialize(sysid, self.dcs_deadline()).await?;
                let seed = serde_json::to_string(&self.cfg.bootstrap_dcs())?;
                self.dcs.set_config_if_absent(&seed, self.dcs_deadline()).await?;
                Ok(true)
            }
            Action::AcquireLeader => {
                let held = self.dcs.acquire_leader(self.dcs_deadline()).await?;
                self.core.advance(ActionResult::Leader { held, sent_at: sent, ttl_secs: self.core.config().ttl });
                if held {
                    info!("acquired the leader lock");
                    self.wake.notify_one();
                }
                Ok(held)
            }
            Action::RenewLeader => {
                let renewed = self.dcs.renew_leader(self.dcs_deadline()).await?;
                let held = renewed.is_some();
                // The lock lasts a ttl from when its lease was last kept alive, which may be this
                // cycle's keep-alive, sent before `sent`.
                let sent_at = renewed.map_or(sent, |t| self.millis_of(t.into_std()));
                self.core.advance(ActionResult::Leader { held, sent_at, ttl_secs: self.core.config().ttl });
                if !held {
                    warn!("the leader lock is no longer ours");
                    self.wake.notify_one();
                }
                Ok(held)
            }
            Action::ReleaseLeader { last_position } => {
                // Our last WAL position first, so replicas can tell they are caught up.
                if let Some(lsn) = last_position {
                    let status = Status { optime: *lsn, ..Default::default() };
                    let _ = self.dcs.write_status(&status, self.dcs_deadline()).await;
                }
                self.dcs.release_leader(self.dcs_deadline()).await?;
                self.core.advance(ActionResult::LeaderReleased);
                info!("released the leader lock");
                Ok(true)
            }
            Action::WriteStatus(status) => {
                self.dcs.write_status(status, self.dcs_deadline()).await?;
                Ok(true)
            }
            Action::PublishHistory { timeline } => {
                let entries = self.pg.timeline_history(&self.cfg.postgresql.data_dir, *timeline)?;
                let known = cluster.map(|c| c.history.as_slice()).unwrap_or_default();
                let entries = super::jobs::with_metadata(entries, known, &self.cfg.name);
                self.dcs.write_history(&entries, self.dcs_deadline()).await?;
                info!(timeline, "timeline history published (it was missing from the DCS)");
                Ok(true)
            }
            Action::WriteFailsafe(topology) => {
                self.dcs.write_failsafe(topology, self.dcs_deadline()).await?;
                info!(members = %topology.keys().cloned().collect::<Vec<_>>().join(","), "failsafe topology updated");
                Ok(true)
            }
            Action::SyncSlots(targets) => {
                self.sync_slots(targets, probe).await?;
                Ok(true)
            }
            Action::StartJob(job) => {
                if self.job.is_some() {
                    bail!("a job is already running");
                }
                if let Some(role) = job.configures() {
                    self.core.advance(ActionResult::Configured(role));
                }
                // A job that can leave a primary running starts only under an armed watchdog: it
                // is armed now rather than after the cycle, and the core's rule says whether the
                // job may start on what the device did.
                let guarded = (self.watchdog_rules.may_leave_a_primary)(job.kind());
                if guarded {
                    self.feed_watchdog(true);
                }
                let leading = self.core.leader_until().is_some();
                let (required, armed) = (self.watchdog.required(), self.watchdog.is_armed());
                if !rampart_core::watchdog::job_may_start(guarded, required, armed, leading) {
                    self.wake.notify_one();
                    bail!("watchdog is required but could not be armed: not starting the {}", job.kind().describe());
                }
                let ctx = self.job_context(cluster);
                self.job = Some(RunningJob::spawn(&self.pg, job.clone(), ctx, self.wake.clone()));
                Ok(true)
            }
            Action::CancelJob => {
                if let Some(j) = self.job.take() {
                    let kind = j.kind();
                    info!(job = kind.describe(), "cancelling the running job");
                    j.cancel().await;
                    self.job_finished(kind, &Err("cancelled by a forced reinitialize".into()));
                }
                Ok(true)
            }
            Action::Stop(mode) => {
                let outcome = match &mut self.stopping {
                    // A second stop signal while PostgreSQL shuts down: stop it immediately
                    // (SIGQUIT; the fast stop's SIGINT was sent already, dropping its wait is safe).
                    Some(stops) if *mode == StopMode::Fast => tokio::select! {
                        outcome = self.pg.stop(StopMode::Fast, STOP_TIMEOUT) => outcome?,
                        () = stops.escalated() => self.pg.stop(StopMode::Immediate, STOP_TIMEOUT).await?,
                    },
                    _ => self.pg.stop(*mode, STOP_TIMEOUT).await?,
                };
                info!(?mode, ?outcome, "PostgreSQL stopped");
                self.pg.disconnect().await;
                let role = publish::role_text(local);
                callbacks::fire(&self.cfg.postgresql.callbacks, "on_stop", role, &self.cfg.scope);
                Ok(true)
            }
            Action::Follow { upstream } => {
                self.follow(StartRole::Replica { upstream: upstream.clone() }).await?;
                Ok(true)
            }
            Action::FollowRemote(sc) => {
                self.follow(StartRole::StandbyLeader(sc.clone())).await?;
                Ok(true)
            }
            Action::ClearFailover => {
                self.dcs.clear_failover(self.dcs_deadline()).await?;
                Ok(true)
            }
            Action::WriteSync { state, expected_revision } => {
                let written = self.dcs.write_sync(state, *expected_revision, self.dcs_deadline()).await?;
                if written {
                    info!(
                        voters = state.sync_standby.as_deref().unwrap_or(""),
                        quorum = state.quorum.unwrap_or(0),
                        "sync key updated"
                    );
                } else {
                    warn!("the sync key changed since it was read; deciding again");
                    self.wake.notify_one();
                }
                Ok(written)
            }
            Action::DeleteSync { expected_revision } => {
                let deleted = self.dcs.delete_sync(*expected_revision, self.dcs_deadline()).await?;
                if !deleted {
                    self.wake.notify_one();
                }
                Ok(deleted)
            }
            Action::SetSynchronousStandbyNames(names) => self.set_sync_names(names, local, probe, cluster).await,
            Action::WipeDataDir => {
                self.pg.wipe_data_dir(&self.cfg.postgresql.data_dir).await?;
                Ok(true)
            }
            Action::Fatal(msg) => bail!("{msg}"),
            Action::RoleChangeCallback(role) => {
                callbacks::fire(&self.cfg.postgresql.callbacks, "on_role_change", role, &self.cfg.scope);
                Ok(true)
            }
        }
    }

    /// Brings the local slots to `targets`: takes the slots this cycle's probe listed (a
    /// primary's), else lists them, lets the core's pure [`rampart_core::slots::reconcile`]
    /// choose the steps, runs them, and reports what it read and, on a replica, the logical
    /// slots to copy.
    async fn sync_slots(&mut self, targets: &rampart_core::slots::SlotTargets, probe: Option<&Probe>) -> Result<()> {
        let existing = match probe.and_then(|p| p.slots.clone()) {
            Some(listed) => listed,
            None => self.pg.list_slots().await?,
        };
        let replayed = probe.and_then(|p| p.replayed_lsn).map(|l| l.0);
        let steps = rampart_core::slots::reconcile(targets, &existing, replayed);
        let report = self.pg.apply_slot_steps(&steps).await;
        if !report.done.is_empty() {
            info!(changes = ?report.done, "replication slots updated");
        }
        for f in &report.failed {
            warn!("replication slot: {f}");
        }
        if !steps.copy.is_empty() {
            info!(slots = ?steps.copy, "logical slots exist on the leader but not here");
        }
        // A copy that can no longer be advanced here is copied again, fresher.
        let mut missing = steps.copy;
        missing.extend(report.lost);
        self.core.advance(ActionResult::SlotsSynced { existing, missing });
        Ok(())
    }

    /// Writes the member key and the API snapshot.
    async fn publish(&mut self, seen: &Seen) {
        let dynamic = self.core.config().clone();
        let mut member = publish::member_data(&self.cfg, &seen.local, seen.probe.as_ref(), seen.job, dynamic.paused());
        let standby_leader = self.core.standby_leader(&seen.local, self.now());
        if standby_leader {
            member.role = rampart_core::Role::StandbyLeader;
        }
        // `list` shows which host has the virtual address.
        if let Some(vip) = self.address.as_ref().map(AddressKeeper::state).filter(|v| v.held) {
            member.extra.insert("vip".into(), serde_json::Value::String(vip.address));
        }
        if self.params.pending_restart() {
            member.pending_restart = Some(true);
            member
                .extra
                .insert("pending_restart_reason".into(), publish::pending_reason_json(&self.params.pending_reason));
        }
        if let Some(s) = &self.local.scheduled {
            member.extra.insert("scheduled_restart".into(), serde_json::json!({ "schedule": s.schedule }));
        }
        if let Some(role) = self.core.role_change(&seen.local) {
            callbacks::fire(&self.cfg.postgresql.callbacks, "on_role_change", role.as_str(), &self.cfg.scope);
        }
        let leader_until = match self.core.believed(self.now()) {
            rampart_core::node::Believed::Leader => self.core.leader_until().map(|m| self.instant(m).into_std()),
            rampart_core::node::Believed::NotLeader => None,
        };
        let mut snap = publish::snapshot(publish::SnapshotInputs {
            cfg: &self.cfg,
            dynamic: &dynamic,
            local: &seen.local,
            probe: seen.probe.as_ref(),
            job: seen.job,
            cluster: seen.cluster.clone(),
            leader_until,
            dcs_last_seen: self.dcs_last_seen,
            now: std::time::Instant::now(),
        });
        if standby_leader {
            snap.role = rampart_core::Role::StandbyLeader;
        }
        snap.pending_restart = self.params.pending_restart();
        snap.pending_restart_reason = self
            .params
            .pending_reason
            .iter()
            .map(|p| (p.name.clone(), p.old_value.clone(), p.new_value.clone()))
            .collect();
        snap.failover_backoff = self.core.race_backoff(self.now());
        snap.failsafe_mode = dynamic.failsafe_mode();
        if let Some(c) = &seen.cluster {
            self.last_failsafe = c.failsafe.clone();
        }
        snap.failsafe_topology = self.last_failsafe.clone();
        snap.failsafe_active = self.failsafe_active();
        snap.watchdog_failed = self.watchdog.unusable(Instant::now(), dynamic.ttl).is_some();
        snap.vip = self.address.as_ref().map(AddressKeeper::state);
        self.snap.send_replace(snap);
        // After the snapshot, and not at all when etcd failed this cycle: a write to an etcd
        // that does not answer waits its whole deadline, and the REST API (failsafe mode's
        // `failsafe_mode_is_active`, the health checks) must not wait for that, nor the next
        // cycle that may fence or run a failsafe round.
        if self.dcs_trouble || seen.cluster.is_none() {
            debug!("etcd did not answer this cycle: the member key is written at the next one");
        } else if let Err(e) = self.dcs.touch_member(&member, self.dcs_deadline()).await {
            debug!(error = %e, "could not update the member key");
        }
    }

    /// Stops PostgreSQL and releases the lock, in the order the core decides
    /// ([`HaNode::decide_shutdown`]: a leader stops PostgreSQL before it releases the lock), then
    /// returns.
    ///
    /// It may start in the middle of a cycle, whose remaining work was dropped where it waited.
    /// That is as safe as the agent being killed at that point (which it must survive anyway),
    /// and safer, since the shutdown then looks again before it acts:
    /// * DCS reads and writes carry their own deadlines and change nothing when dropped; one that
    ///   took effect without the core hearing of it (a lock just acquired) is read back from the
    ///   DCS below, or, with etcd unreachable, the lock simply expires after its ttl;
    /// * a stop of PostgreSQL already has its signal sent: it is decided and sent again below;
    /// * a running job (a spawned task: start, promotion, clone, rewind...) is cancelled here
    ///   before anything is observed; a postmaster it started is tracked from the moment it was
    ///   spawned, and a promotion already asked of PostgreSQL completes in PostgreSQL: either way
    ///   the observation below sees a live postmaster and the core stops it before the lock goes.
    ///   The tools a job runs (initdb, pg_basebackup, pg_rewind) are killed with it.
    ///
    /// Every DCS call here is bounded by [`SHUTDOWN_DCS_BOUND`] per step rather than
    /// `retry_timeout`, and a second stop signal turns a fast stop of PostgreSQL into an
    /// immediate one.
    async fn shutdown(mut self, signal: StopSignal, stops: StopWatch) -> Result<()> {
        self.stopping = Some(stops);
        self.shutdown_dcs_until = Some(Instant::now() + SHUTDOWN_DCS_BOUND);
        if let Some(j) = self.job.take() {
            info!(job = j.kind().describe(), "cancelling the running job");
            j.cancel().await;
        }
        self.local.refuse_all("the agent is shutting down");
        let (local, probe, _) = self.observe_local().await;
        let cluster = self.read_cluster(None).await;
        let dcs = match &cluster {
            Ok(c) => DcsView::Ok(c),
            Err(e) => DcsView::Unavailable(e.clone()),
        };
        let obs = Observation {
            now: self.now(),
            wall_clock_ms: self.clock.unix_ms(),
            request: None,
            dcs,
            local: &local,
            job: None,
            peers: None,
            failsafe_round: None,
            failsafe_ping: None,
            watchdog_unusable: None,
        };
        let lease_end = self.core.leader_until();
        let plan = self.core.decide_shutdown(&obs);
        info!(signal = signal.name(), "{}", plan.message);
        // A stopping agent holds no address, whatever becomes of PostgreSQL.
        self.apply_address(false, lease_end).await;
        let dcs_answered = cluster.is_ok();
        let cluster = cluster.ok();
        self.execute(&plan, &local, probe.as_ref(), cluster.as_deref()).await?;
        // The member key shows PostgreSQL stopped, unless etcd did not answer a moment ago.
        let now = Instant::now();
        self.shutdown_dcs_until = Some(if dcs_answered { now + SHUTDOWN_DCS_BOUND } else { now });
        let (local, probe, _) = self.observe_local().await;
        let seen = Seen { local, probe, cluster, job: None };
        self.publish(&seen).await;
        self.watchdog.shutdown();
        info!("agent stopped");
        Ok(())
    }
}

/// Whether the host holds the virtual address after a plan: the core's rule
/// ([`rampart_core::Plan::holds_address`]). The simulation swaps in vip-manager's to show that it
/// notices (a negative control); nothing else changes it.
#[derive(Clone, Copy)]
pub struct AddressRule(fn(plan: &Plan, leader_key_names_me: bool) -> bool);

impl AddressRule {
    pub const CORE: AddressRule = AddressRule(|plan, _| plan.holds_address);

    /// Broken on purpose: held while the leader key, as last read, names this member.
    #[cfg(test)]
    pub const LEADER_KEY: AddressRule = AddressRule(|_, named| named);
}

/// The watchdog rules the loop applies: the core's. The simulation swaps in a broken pair to
/// show that it notices (a negative control); nothing else changes them.
#[derive(Clone, Copy)]
pub struct WatchdogRules {
    /// Whether PostgreSQL runs as primary, or a job under way may make it one before the next
    /// cycle (a promotion, or a start in place): the watchdog must be armed before that can take
    /// effect.
    guards_a_primary: fn(&PgProcess, Option<JobKind>) -> bool,
    /// Whether a job can leave PostgreSQL running as primary (armed before it starts).
    may_leave_a_primary: fn(JobKind) -> bool,
}

impl WatchdogRules {
    /// [`rampart_core::watchdog::guards_a_primary`] and [`rampart_core::watchdog::may_leave_a_primary`].
    pub const CORE: WatchdogRules = WatchdogRules {
        guards_a_primary: rampart_core::watchdog::guards_a_primary,
        may_leave_a_primary: rampart_core::watchdog::may_leave_a_primary,
    };

    /// Broken on purpose: only a running primary or a promotion counts.
    #[cfg(test)]
    pub const PROMOTION_ONLY: WatchdogRules = WatchdogRules {
        guards_a_primary: |p, job| p.is_primary() || job == Some(JobKind::Promote),
        may_leave_a_primary: |job| job == JobKind::Promote,
    };
}

impl<P: Ports> Agent<P> {
    /// Feeds, runs down or disarms the watchdog after a cycle (rule: [`rampart_core::watchdog`]).
    fn feed_watchdog(&mut self, primary: bool) {
        let ttl = self.core.config().ttl;
        let step = rampart_core::watchdog::step(
            self.core.leader_until(),
            self.now(),
            primary,
            self.core.config().paused(),
            self.watchdog.effective_timeout_secs(ttl),
        );
        self.watchdog.apply(step, ttl);
    }
}
