//! Long actions run off the HA loop: bootstrap, clone, rewind, start and promotion.
//!
//! The loop keeps cycling while a job runs, so a leader keeps renewing its lock during a slow
//! start and fencing still happens on time. A job reports its end exactly once, by waking the
//! loop; the loop collects the result with [`RunningJob::poll`] and hands it to the core.
//! Invariant: jobs are mechanisms only; what follows a job's success or failure is the core's
//! decision.

use std::sync::Arc;

use rampart_core::model::HistoryEntry;
use rampart_core::observe::{JobError, JobKind, JobState};
use rampart_core::{DataDir, Job, StartRole, StopMode, Upstream};
use rampart_dcs::Dcs;
use rampart_pg::{ExtraUser, HbaFile, PgSettings, Postmaster, Sql};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::ports::Jobs;

/// How a job ended.
pub type JobResult = Result<(), JobError>;

/// Everything a job may need besides the local PostgreSQL (the port that runs it).
#[derive(Clone)]
pub struct JobContext<D> {
    /// PostgreSQL settings in force when the job started.
    pub settings: PgSettings,
    /// DCS handle (promotion records the new timeline in `history`).
    pub dcs: D,
    /// `bootstrap.initdb` as initdb arguments.
    pub initdb_args: Vec<String>,
    /// `bootstrap.pg_hba`, appended to the data directory's pg_hba.conf after the bootstrap.
    pub bootstrap_pg_hba: Vec<String>,
    /// `bootstrap.method` when it is a custom method (run instead of initdb).
    pub bootstrap_method: Option<rampart_config::BootstrapMethod>,
    /// `bootstrap.post_bootstrap`, run at the end of a bootstrap.
    pub post_bootstrap: Option<String>,
    /// Legacy `bootstrap.users`.
    pub extra_users: Vec<ExtraUser>,
    /// Timeline history known to the DCS, to keep earlier entries' metadata.
    pub known_history: Vec<HistoryEntry>,
    /// `postgresql.pre_promote`, run before a promotion.
    pub pre_promote: Option<String>,
    /// Cluster name (passed to scripts).
    pub scope: String,
    /// `create_replica_methods`: how a replica's data directory is made.
    pub replica_creation: rampart_config::ReplicaCreation,
}

/// A job in flight.
pub struct RunningJob {
    kind: JobKind,
    handle: JoinHandle<JobResult>,
}

impl RunningJob {
    /// Starts `job` on `runner` (the local PostgreSQL port); `wake` is notified when it ends.
    pub fn spawn<D, R: Jobs<D>>(runner: &R, job: Job, ctx: JobContext<D>, wake: Arc<Notify>) -> RunningJob {
        let kind = job.kind();
        info!(job = kind.describe(), "starting job");
        let run = runner.run_job(job, ctx, wake.clone());
        let handle = tokio::spawn(async move {
            let result = run.await;
            wake.notify_one();
            result
        });
        RunningJob { kind, handle }
    }

    /// The job's kind.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// `Running`, or `Finished` with the result once it has ended.
    pub async fn poll(&mut self) -> JobState {
        if !self.handle.is_finished() {
            return JobState::Running(self.kind);
        }
        let result = match (&mut self.handle).await {
            Ok(r) => r,
            Err(e) => Err(JobError::Failed(format!("job task failed: {e}"))),
        };
        match &result {
            Ok(()) => info!(job = self.kind.describe(), "job finished"),
            Err(e) => warn!(job = self.kind.describe(), error = %e, "job failed"),
        }
        JobState::Finished(self.kind, result)
    }

    /// Cancels the job and waits until its task is gone: it stops at the wait it was in, and
    /// the tools it ran (initdb, pg_basebackup, pg_rewind) are killed with it. A postmaster it
    /// started stays: the [`Postmaster`] tracks it, and the caller decides what becomes of it.
    pub async fn cancel(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Runs `job` on the real postmaster `pm` and control connection `sql` (the production
/// [`Jobs`] port); `wake` may be notified on the way, when the loop should look before the end.
pub async fn run<D: Dcs>(job: Job, ctx: &JobContext<D>, pm: &Postmaster, sql: &Sql, wake: &Notify) -> JobResult {
    let s = &ctx.settings;
    let text = |e: rampart_pg::PgError| JobError::Failed(e.to_string());
    match job {
        Job::Bootstrap => {
            match &ctx.bootstrap_method {
                None => {
                    rampart_pg::initdb(s, &ctx.initdb_args).await.map_err(text)?;
                    rampart_pg::append_hba(s, &ctx.bootstrap_pg_hba).map_err(text)?;
                    rampart_pg::write_pgpass(s).map_err(text)?;
                    pm.start(s, &StartRole::Primary).await.map_err(text)?;
                    sql.create_roles(s, &ctx.extra_users).await.map_err(text)?;
                }
                Some(method) => {
                    let first_start =
                        super::custom_bootstrap::run(method, s, &ctx.scope, &ctx.bootstrap_pg_hba).await?;
                    rampart_pg::write_pgpass(s).map_err(text)?;
                    pm.start(&first_start, &StartRole::Primary).await.map_err(text)?;
                    super::custom_bootstrap::wait_for_end_of_recovery(sql).await?;
                    sql.create_roles(s, &ctx.extra_users).await.map_err(text)?;
                    // The configured passwords are set: the operator's rules come back.
                    rampart_pg::restore_hba(s).map_err(text)?;
                    if s.pg_hba == HbaFile::Named {
                        // `hba_file` takes a restart.
                        pm.stop(StopMode::Fast, STOP_LIMIT).await.map_err(text)?;
                        sql.disconnect().await;
                        pm.start(s, &StartRole::Primary).await.map_err(text)?;
                    } else {
                        rampart_pg::write_config(s, &StartRole::Primary).map_err(text)?;
                        sql.reload().await.map_err(text)?;
                    }
                }
            }
            if let Some(cmd) = &ctx.post_bootstrap {
                super::custom_bootstrap::post_bootstrap(cmd, s).await?;
            }
            Ok(())
        }
        Job::BootstrapStandby(standby) => {
            // The standby leader's copy of the other cluster: its `create_replica_methods` (the
            // sections under `postgresql` describe the custom ones), from its `host`.
            let creation = super::replica_methods::for_standby(&ctx.replica_creation, &standby.create_replica_methods)?;
            let from = standby.host.as_ref().map(|host| Upstream {
                name: format!("the other cluster ({})", standby.describe()),
                host: host.clone(),
                port: standby.port,
            });
            super::replica_methods::create(&creation, s, from.as_ref(), &ctx.scope).await?;
            rampart_pg::write_pgpass(s).map_err(text)
        }
        Job::Clone(from) => {
            super::replica_methods::create(&ctx.replica_creation, s, from.as_ref(), &ctx.scope).await?;
            rampart_pg::write_pgpass(s).map_err(text)
        }
        Job::Rewind(from) => {
            if let Err(e) = rampart_pg::check_rewind_source(s, &from).await {
                return Err(JobError::RewindSourceUnavailable { source_name: from.name, reason: e.to_string() });
            }
            rampart_pg::write_pgpass(s).map_err(text)?;
            let outcome = rampart_pg::rewind(s, &from).await.map_err(|e| match e {
                // The core tries again later rather than waiting for an operator.
                rampart_pg::PgError::RewindUntouched { status, output_tail } => {
                    JobError::RewindUntouched { status: status.to_string(), output_tail }
                }
                e => JobError::Failed(e.to_string()),
            })?;
            info!(?outcome, from = %from.name, "pg_rewind done");
            Ok(())
        }
        Job::Start(role) => {
            rampart_pg::write_pgpass(s).map_err(text)?;
            pm.start(&settings_for(s, &role).await, &role).await.map_err(text)
        }
        Job::Promote => {
            if let Some(cmd) = &ctx.pre_promote {
                super::callbacks::pre_promote(cmd, &ctx.scope).await?;
            }
            sql.end_recovery().await.map_err(text)?;
            // The server runs as a primary on its new timeline: let the loop publish that now
            // rather than after the checkpoint (the checkpoint has a connection of its own).
            wake.notify_one();
            sql.checkpoint_apart().await.map_err(text)?;
            record_history(ctx, sql).await;
            Ok(())
        }
        Job::Restart(role) => {
            pm.stop(StopMode::Fast, STOP_LIMIT).await.map_err(text)?;
            sql.disconnect().await;
            rampart_pg::write_pgpass(s).map_err(text)?;
            pm.start(&settings_for(s, &role).await, &role).await.map_err(text)
        }
        Job::CopyLogicalSlots { from, upstream, slots } => {
            // Read first: if the leader cannot give the slots, the replica keeps running.
            let states = rampart_pg::read_slot_states(s, &from, &slots).await.map_err(text)?;
            if states.is_empty() {
                return Err("the leader no longer has these logical slots".into());
            }
            let names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
            info!(slots = ?names, from = %from.name, "installing copies of the leader's logical slots");
            pm.stop(StopMode::Fast, STOP_LIMIT).await.map_err(text)?;
            sql.disconnect().await;
            // Start again whatever happened to the copy: a replica left stopped helps nobody.
            let installed = rampart_pg::install_slot_states(&s.data_dir, &states).map_err(text);
            rampart_pg::write_pgpass(s).map_err(text)?;
            let role = StartRole::Replica { upstream: Some(upstream) };
            pm.start(&settings_for(s, &role).await, &role).await.map_err(text)?;
            installed
        }
        Job::Reinitialize(from) => {
            pm.stop(StopMode::Immediate, STOP_LIMIT).await.map_err(text)?;
            sql.disconnect().await;
            rampart_pg::wipe_data_dir(&s.data_dir).await.map_err(text)?;
            super::replica_methods::create(&ctx.replica_creation, s, Some(&from), &ctx.scope).await?;
            rampart_pg::write_pgpass(s).map_err(text)
        }
    }
}

/// The settings to start PostgreSQL with as `role`: for a replica, the control file is read
/// now, with the server stopped, so the start gets at least what the WAL it will replay needs
/// (rule: [`rampart_core::hot_standby::raise_for_replica`]), logged as Patroni logs it.
async fn settings_for(s: &PgSettings, role: &StartRole) -> PgSettings {
    if !role.in_recovery() {
        return s.clone();
    }
    let control = match rampart_pg::controldata(&s.bin_dir, &s.data_dir).await {
        DataDir::Initialized(c) => c.hot_standby,
        _ => Default::default(),
    };
    let (settings, raised) = super::settings::for_role(s.clone(), role, &control);
    for r in &raised {
        info!("{}", super::settings::raise_message(r));
    }
    settings
}

/// How long a stop inside a job may take before the postmaster is killed.
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `entries` (from a history file) with the time and new leader the DCS knows for each, and,
/// on the newest entry when unknown, now and `me` (Patroni's format).
pub(in crate::agent) fn with_metadata(
    mut entries: Vec<HistoryEntry>,
    known: &[HistoryEntry],
    me: &str,
) -> Vec<HistoryEntry> {
    for e in entries.iter_mut() {
        if let Some(k) = known.iter().find(|k| k.timeline == e.timeline) {
            e.timestamp = k.timestamp.clone();
            e.new_leader = k.new_leader.clone();
        }
    }
    if let Some(last) = entries.last_mut() {
        if last.timestamp.is_none() {
            last.timestamp = Some(jiff::Zoned::now().strftime("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string());
            last.new_leader = Some(me.to_string());
        }
    }
    entries
}

/// Publishes the timeline history after a promotion: the history file of the new timeline,
/// with the time and this member's name on the newest entry (Patroni's format). A failure here
/// is logged, not fatal: the promotion itself succeeded.
async fn record_history<D: Dcs>(ctx: &JobContext<D>, sql: &Sql) {
    let probe = match sql.probe().await {
        Ok(p) => p,
        Err(e) => return warn!(error = %e, "could not read the new timeline after promotion"),
    };
    let entries = match rampart_pg::read_history(&ctx.settings.data_dir, probe.timeline) {
        Ok(h) => h,
        Err(e) => return warn!(error = %e, "could not read the timeline history file"),
    };
    let entries = with_metadata(entries, &ctx.known_history, &ctx.settings.name);
    if let Err(e) = ctx.dcs.write_history(&entries, ctx.dcs.op_deadline()).await {
        warn!(error = %e, "could not write the timeline history to the DCS");
    }
}
