//! The simulation's ports of one machine: its toy PostgreSQL (observation, stop, control
//! connection, files, jobs), its watchdog device, the virtual wall clock and the peers' REST
//! API, all reading and changing the shared [`World`].
//!
//! Jobs take effect after a short virtual delay, and only if the machine was not reset since
//! they started (a job of a dead agent does nothing). A frozen agent's calls wait for the freeze
//! to end.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rampart_api::backend::BoxFuture;
use rampart_api::MemberProbe;
use rampart_core::model::HistoryEntry;
use rampart_core::observe::{ClusterState, ControlData, JobError, LocalPg, PgProcess};
use rampart_core::slots::{ExistingSlot, SlotSteps};
use rampart_core::{DataDir, Job, Lsn, StartRole, StopMode};
use rampart_dcs::Dcs;
use rampart_pg::{PendingRestart, PgSettings, PostmasterState, Probe, ReplicationPeer, SlotReport, StopOutcome};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::dcs::MemDcs;
use super::world::{index, name, sync_state, Device, Pg};
use super::{wait_while_frozen, SharedWorld};
use crate::agent::jobs::{JobContext, JobResult};
use crate::agent::ports::{
    Control, DataFiles, Jobs, PgResult, Ports, Server, VirtualAddress, WallClock, WatchdogDevice,
};

/// How long a job takes.
const JOB_MS: u64 = 300;
/// Virtual unix time of the run's start.
const EPOCH_MS: i64 = 1_700_000_000_000;

/// The simulation's port types.
pub struct SimPorts;

impl Ports for SimPorts {
    type Dcs = MemDcs;
    type Pg = ToyPg;
    type Watchdog = SimWatchdog;
    type Address = SimAddress;
    type Clock = SimClock;
}

/// Machine `me`'s PostgreSQL.
#[derive(Clone)]
pub struct ToyPg {
    pub(super) world: SharedWorld,
    pub(super) me: usize,
    /// Never sends: the loop wakes on its own schedule (and on job ends).
    pub(super) state: Arc<watch::Sender<PostmasterState>>,
}

impl ToyPg {
    /// Machine `me`'s PostgreSQL.
    pub fn new(world: SharedWorld, me: usize) -> ToyPg {
        let (tx, _) = watch::channel(PostmasterState::NotRunning { last_exit: None });
        ToyPg { world, me, state: Arc::new(tx) }
    }

    async fn gate(&self) {
        wait_while_frozen(&self.world, self.me).await;
    }

    fn with<T>(&self, f: impl FnOnce(&mut Pg) -> T) -> T {
        let mut w = self.world.lock().unwrap();
        f(&mut w.machines[self.me].pg)
    }
}

fn control(pg: &Pg) -> ControlData {
    let state = match (pg.was_primary, pg.running) {
        (true, true) => ClusterState::InProduction,
        (true, false) if pg.crashed => ClusterState::InProduction,
        (true, false) => ClusterState::ShutDown,
        (false, true) => ClusterState::InArchiveRecovery,
        (false, false) => ClusterState::ShutDownInRecovery,
    };
    ControlData {
        sysid: "1".into(),
        state,
        timeline: pg.timeline,
        checkpoint_lsn: Lsn(pg.wal),
        min_recovery_timeline: if pg.was_primary { 0 } else { pg.timeline },
        min_recovery_lsn: Lsn(if pg.was_primary { 0 } else { pg.wal }),
        hot_standby: Default::default(),
    }
}

impl Server for ToyPg {
    fn adopt(&self) {}

    fn state_changes(&self) -> watch::Receiver<PostmasterState> {
        self.state.subscribe()
    }

    async fn observe(&self, _settings: &PgSettings) -> (LocalPg, Option<Probe>) {
        self.gate().await;
        let w = self.world.lock().unwrap();
        let now = w.now();
        let pg = &w.machines[self.me].pg;
        let data = DataDir::Initialized(control(pg));
        if !pg.running {
            let process = if pg.crashed { PgProcess::Crashed } else { PgProcess::Stopped };
            return (LocalPg { data, process }, None);
        }
        let replication = if pg.in_recovery {
            Vec::new()
        } else {
            let from = w.streaming_from(self.me);
            from.iter()
                .map(|&j| ReplicationPeer {
                    usename: Some("replicator".into()),
                    application_name: Some(name(j)),
                    client_addr: None,
                    state: Some("streaming".into()),
                    sync_state: Some(sync_state(&pg.ssn, j, &from)),
                    sync_priority: None,
                    write_lsn: Some(Lsn(w.machines[j].pg.wal)),
                    flush_lsn: Some(Lsn(w.machines[j].pg.wal)),
                    replay_lsn: Some(Lsn(w.machines[j].pg.wal)),
                })
                .collect()
        };
        let replica = pg.in_recovery;
        let probe = Probe {
            in_recovery: replica,
            timeline: pg.timeline,
            flush_lsn: (!replica).then_some(Lsn(pg.wal)),
            received_lsn: replica.then_some(Lsn(pg.wal)),
            replayed_lsn: replica.then_some(Lsn(pg.wal)),
            received_tli: if replica { pg.receiver_tli } else { None },
            wal_receiver_status: (replica && pg.receiving).then(|| "streaming".into()),
            streaming: replica && pg.receiving,
            upstream_silent_ms: (replica && pg.receiving).then(|| now.saturating_sub(pg.last_heard)),
            upstream: pg.upstream.filter(|_| replica).map(|u| ("127.0.0.1".to_string(), super::pg_port(u))),
            postmaster_start_time: String::new(),
            server_version_num: 150_000,
            replayed_at: None,
            replay_paused: false,
            replay_pause: Default::default(),
            synchronous_commit: "on".into(),
            hot_standby: Default::default(),
            replication,
            system_identifier: "1".into(),
            synchronous_standby_names: pg.ssn.clone(),
            // The toy keeps no slots (see `list_slots`).
            slots: (!replica).then(Vec::new),
        };
        (LocalPg { data, process: PgProcess::Running(probe.to_core()) }, Some(probe))
    }

    async fn stop(&self, mode: StopMode, _timeout: Duration) -> PgResult<StopOutcome> {
        self.gate().await;
        let me = self.me;
        let mut w = self.world.lock().unwrap();
        let was = w.machines[me].pg.running;
        w.machines[me].pg.running = false;
        w.machines[me].pg.crashed = false;
        w.machines[me].pg.receiving = false;
        if was {
            w.note(format!("n{me} PostgreSQL stopped ({mode:?})"));
        }
        Ok(if was { StopOutcome::Stopped } else { StopOutcome::NotRunning })
    }
}

impl Control for ToyPg {
    fn reconnect(&mut self, _settings: &PgSettings) {}

    async fn disconnect(&self) {}

    async fn reload(&self) -> PgResult<()> {
        self.gate().await;
        self.with(|pg| {
            if pg.running {
                pg.ssn = pg.conf_ssn.clone();
                if pg.in_recovery && pg.upstream != pg.conf_upstream {
                    pg.upstream = pg.conf_upstream;
                    pg.receiving = false;
                }
            }
        });
        Ok(())
    }

    async fn list_slots(&self) -> PgResult<Vec<ExistingSlot>> {
        self.gate().await;
        Ok(Vec::new())
    }

    async fn apply_slot_steps(&self, _steps: &SlotSteps) -> SlotReport {
        self.gate().await;
        SlotReport::default()
    }

    async fn pending_restart(&self) -> PgResult<Vec<PendingRestart>> {
        self.gate().await;
        Ok(Vec::new())
    }

    async fn wait_for_synchronous_standby_names(&self, want: &str, _limit: Duration) -> PgResult<bool> {
        self.gate().await;
        Ok(self.with(|pg| pg.ssn == want))
    }
}

/// `synchronous_standby_names` in `s`.
fn ssn_of(s: &PgSettings) -> String {
    s.parameters.get("synchronous_standby_names").cloned().unwrap_or_default()
}

impl DataFiles for ToyPg {
    fn write_pgpass(&self, _settings: &PgSettings) -> PgResult<()> {
        Ok(())
    }

    fn timeline_history(&self, _data_dir: &Path, timeline: u32) -> PgResult<Vec<HistoryEntry>> {
        Ok(self.with(|pg| history_entries(&pg.history, timeline)))
    }

    fn write_config(&self, settings: &PgSettings, role: &StartRole) -> PgResult<()> {
        self.with(|pg| {
            pg.conf_ssn = ssn_of(settings);
            if let StartRole::Replica { upstream } = role {
                pg.conf_upstream = upstream.as_ref().and_then(|u| index(&u.name));
            }
        });
        Ok(())
    }

    async fn wipe_data_dir(&self, _data_dir: &Path) -> PgResult<()> {
        self.gate().await;
        Ok(())
    }

    async fn move_data_dir_aside(&self, _data_dir: &Path) -> PgResult<()> {
        self.gate().await;
        Ok(())
    }
}

impl Jobs<MemDcs> for ToyPg {
    fn run_job(
        &self,
        job: Job,
        ctx: JobContext<MemDcs>,
        _wake: Arc<Notify>,
    ) -> impl std::future::Future<Output = JobResult> + Send + 'static {
        let (world, me) = (self.world.clone(), self.me);
        let epoch = {
            let mut w = world.lock().unwrap();
            let now = w.now();
            w.jobs_started.push((now, me, job.kind()));
            w.machines[me].epoch
        };
        async move {
            tokio::time::sleep(Duration::from_millis(JOB_MS)).await;
            let history = {
                let mut w = world.lock().unwrap();
                if w.machines[me].epoch != epoch {
                    return Err(JobError::Failed("the machine was reset".into()));
                }
                if w.fail_next_job.as_ref().is_some_and(|(kind, _)| *kind == job.kind()) {
                    return Err(w.fail_next_job.take().expect("checked above").1);
                }
                run_toy_job(&mut w, me, &job, &ctx.settings)?
            };
            // As the real job: the promotion happened; a history that could not be written is
            // the leader's to publish later (Action::PublishHistory).
            if let Some(h) = history {
                let _ = ctx.dcs.write_history(&h, ctx.dcs.op_deadline()).await;
            }
            Ok(())
        }
    }
}

/// The history file of `timeline`: where each earlier timeline ended.
fn history_entries(history: &[(u32, u64)], timeline: u32) -> Vec<HistoryEntry> {
    history
        .iter()
        .filter(|(t, _)| *t < timeline)
        .map(|(t, at)| HistoryEntry {
            timeline: *t,
            lsn: Lsn(*at),
            reason: "no recovery target specified".into(),
            timestamp: None,
            new_leader: None,
        })
        .collect()
}

/// What `job` does to machine `me`'s PostgreSQL; a promotion returns the history to publish.
fn run_toy_job(
    w: &mut super::world::World,
    me: usize,
    job: &Job,
    settings: &PgSettings,
) -> Result<Option<Vec<HistoryEntry>>, JobError> {
    let start = |w: &mut super::world::World, role: &StartRole| {
        let pg = &mut w.machines[me].pg;
        pg.running = true;
        pg.crashed = false;
        pg.receiving = false;
        pg.receiver_tli = None;
        pg.ssn = ssn_of(settings);
        pg.conf_ssn = pg.ssn.clone();
        match role {
            StartRole::Primary => {
                pg.in_recovery = false;
                pg.upstream = None;
                pg.was_primary = true;
            }
            StartRole::Replica { upstream } => {
                pg.in_recovery = true;
                pg.upstream = upstream.as_ref().and_then(|u| index(&u.name));
                pg.conf_upstream = pg.upstream;
                pg.was_primary = false;
            }
            // The simulated clusters are never standby clusters: a standby leader there would
            // follow nobody the world knows.
            StartRole::StandbyLeader(_) => {
                pg.in_recovery = true;
                pg.upstream = None;
                pg.conf_upstream = None;
                pg.was_primary = false;
            }
        }
        w.note(format!("n{me} PostgreSQL started as {role:?}"));
    };
    match job {
        Job::Start(role) | Job::Restart(role) => {
            start(w, role);
            let now = w.now();
            if *role == StartRole::Primary && now < w.faults_until && w.rng.below(2) == 0 {
                let long = w.ttl_ms + 1000 + w.rng.below(2 * w.ttl_ms - 1000 + 1);
                let cut = w.rng.below(2) == 0;
                let m = &mut w.machines[me];
                m.frozen_until = m.frozen_until.max(now + long);
                if cut {
                    m.link_cut_until = m.link_cut_until.max(now + long);
                    m.dcs_cut_until = m.dcs_cut_until.max(now + long);
                }
                let host = if cut { ", its host cut off" } else { "" };
                w.note(format!(
                    "fault 8: n{me}'s agent frozen for {long} ms right after starting PostgreSQL as primary{host}"
                ));
            }
            Ok(None)
        }
        Job::BootstrapStandby(_) => Err(JobError::Failed("the simulation has no other cluster to copy".into())),
        Job::Promote => {
            let pg = &w.machines[me].pg;
            if !pg.running || !pg.in_recovery {
                return Err(JobError::Failed("not a running standby".into()));
            }
            if w.mode.is_active() && pg.wal < w.acked {
                let (wal, acked) = (pg.wal, w.acked);
                w.violate(format!("n{me} promoted at {wal} but commits up to {acked} were acknowledged"));
            }
            let pg = &mut w.machines[me].pg;
            pg.history.push((pg.timeline, pg.wal));
            pg.timeline += 1;
            pg.in_recovery = false;
            pg.upstream = None;
            pg.receiving = false;
            pg.was_primary = true;
            let (tl, wal) = (pg.timeline, pg.wal);
            let history = history_entries(&pg.history, tl);
            // A member that never saw a newer timeline picks a number taken already, as
            // PostgreSQL does (it knows only its own history files).
            if let Some(first) = w.timelines.insert(tl, me) {
                w.note(format!("timeline collision: timeline {tl} exists already (n{first} promoted onto it)"));
            }
            w.note(format!("n{me} promoted onto timeline {tl} at {wal}"));
            Ok(Some(history))
        }
        Job::Rewind(from) => {
            let u = index(&from.name).ok_or_else(|| JobError::Failed("unknown source".into()))?;
            let src = w.machines[u].pg.clone();
            if !src.running || !w.linked(me, u, w.now()) {
                return Err(JobError::RewindSourceUnavailable {
                    source_name: from.name.clone(),
                    reason: "not answering as a primary".into(),
                });
            }
            let pg = &mut w.machines[me].pg;
            // Back to where its timeline forked off the source's, then the source's history.
            let fork = src.fork_of(pg.timeline).unwrap_or(src.wal);
            pg.wal = pg.wal.min(fork);
            pg.timeline = src.timeline;
            pg.history = src.history.clone();
            pg.was_primary = false;
            pg.receiver_tli = None;
            w.note(format!("n{me} rewound from {}", from.name));
            Ok(None)
        }
        Job::Clone(Some(from)) | Job::Reinitialize(from) => {
            let u = index(&from.name).ok_or_else(|| JobError::Failed("unknown source".into()))?;
            let src = w.machines[u].pg.clone();
            let pg = &mut w.machines[me].pg;
            pg.running = false;
            pg.wal = src.wal;
            pg.timeline = src.timeline;
            pg.history = src.history;
            pg.was_primary = false;
            w.note(format!("n{me} cloned from {}", from.name));
            Ok(None)
        }
        Job::Clone(None) | Job::Bootstrap => Err(JobError::Failed("not modelled".into())),
        Job::CopyLogicalSlots { .. } => Ok(None),
    }
}

/// Machine `me`'s watchdog device.
pub struct SimWatchdog {
    pub(super) world: SharedWorld,
    pub(super) me: usize,
}

impl WatchdogDevice for SimWatchdog {
    fn writable(&self, _path: &Path) -> Result<(), String> {
        Ok(())
    }

    fn arm(&mut self, _path: &Path, timeout_secs: u64) -> Result<u64, String> {
        let mut w = self.world.lock().unwrap();
        let now = w.now();
        w.machines[self.me].device = Some(Device { last_fed: now, timeout_ms: timeout_secs * 1000 });
        Ok(timeout_secs)
    }

    fn keepalive(&mut self) -> Result<(), String> {
        let mut w = self.world.lock().unwrap();
        let now = w.now();
        match &mut w.machines[self.me].device {
            Some(d) => {
                d.last_fed = now;
                Ok(())
            }
            None => Err("not armed".into()),
        }
    }

    fn disarm(&mut self) {
        self.world.lock().unwrap().machines[self.me].device = None;
    }
}

/// Machine `me`'s virtual address: held while the machine has it (a reset takes it away).
pub struct SimAddress {
    pub(super) world: SharedWorld,
    pub(super) me: usize,
}

impl VirtualAddress for SimAddress {
    fn held(&self) -> Result<bool, String> {
        Ok(self.world.lock().unwrap().machines[self.me].holds_address)
    }

    async fn take(&mut self) -> Result<(), String> {
        let mut w = self.world.lock().unwrap();
        w.machines[self.me].holds_address = true;
        w.note(format!("n{} took the virtual address", self.me));
        Ok(())
    }

    async fn give_up(&mut self, _limit: Duration) -> Result<(), String> {
        let mut w = self.world.lock().unwrap();
        w.machines[self.me].holds_address = false;
        w.note(format!("n{} gave up the virtual address", self.me));
        Ok(())
    }
}

/// Virtual wall-clock time.
pub struct SimClock(pub(super) SharedWorld);

impl WallClock for SimClock {
    fn unix_ms(&self) -> i64 {
        EPOCH_MS + self.0.lock().unwrap().now() as i64
    }
}

/// The peers' REST API seen from machine `me`: a member answers while its agent runs and
/// neither machine is cut off; otherwise the request times out.
pub struct SimPeers {
    pub(super) world: SharedWorld,
    pub(super) me: usize,
}

impl MemberProbe for SimPeers {
    fn fetch(&self, api_url: &str, timeout: Duration) -> BoxFuture<'_, Result<Value, String>> {
        let target = super::api_index(api_url);
        Box::pin(async move {
            wait_while_frozen(&self.world, self.me).await;
            let answer = target.and_then(|j| {
                let w = self.world.lock().unwrap();
                let now = w.now();
                let m = &w.machines[j];
                let answers = m.down_until.is_none() && m.frozen_until <= now && w.linked(self.me, j, now);
                answers.then(|| patroni_json(&m.pg))
            });
            match answer {
                Some(v) => Ok(v),
                None => {
                    tokio::time::sleep(timeout).await;
                    Err("timed out".into())
                }
            }
        })
    }
}

/// The `/patroni` answer's fields the race reads.
fn patroni_json(pg: &Pg) -> Value {
    let role = if pg.in_recovery { "replica" } else { "primary" };
    let state = if pg.running { "running" } else { "stopped" };
    let xlog = if pg.in_recovery {
        json!({"received_location": pg.wal, "replayed_location": pg.wal})
    } else {
        json!({"location": pg.wal})
    };
    json!({"state": state, "role": role, "timeline": pg.timeline, "xlog": xlog})
}
