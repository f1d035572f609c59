//! The production ports: etcd, the real postmaster and control connection, the files of the
//! data directory, the Linux watchdog and the system clock. Each is a thin wrapper of what
//! `rampart_pg`, `rampart_dcs` and [`crate::agent::watchdog`] do; none decides anything.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rampart_core::observe::LocalPg;
use rampart_core::slots::{ExistingSlot, SlotSteps};
use rampart_core::{Job, StartRole, StopMode};
use rampart_dcs::EtcdDcs;
use rampart_pg::{PendingRestart, PgSettings, Postmaster, PostmasterState, Probe, SlotReport, Sql, StopOutcome};
use tokio::sync::{watch, Notify};

use super::{Control, DataFiles, Jobs, PgResult, Ports, Server, WallClock};
use crate::agent::jobs::{self, JobContext, JobResult};
use crate::agent::watchdog::LinuxWatchdog;

/// The agent as it runs in production.
pub struct RealPorts;

impl Ports for RealPorts {
    type Dcs = EtcdDcs;
    type Pg = LocalServer;
    type Watchdog = LinuxWatchdog;
    type Address = crate::vip::HostAddress;
    type Clock = SystemClock;
}

/// The local PostgreSQL: its postmaster and the agent's control connection.
#[derive(Clone)]
pub struct LocalServer {
    pm: Arc<Postmaster>,
    sql: Arc<Sql>,
}

impl LocalServer {
    /// The server of these settings (nothing is touched yet).
    pub fn new(pm: Arc<Postmaster>, settings: &PgSettings) -> LocalServer {
        LocalServer { pm, sql: Arc::new(Sql::new(settings)) }
    }
}

impl Server for LocalServer {
    fn adopt(&self) {
        self.pm.adopt();
    }

    fn state_changes(&self) -> watch::Receiver<PostmasterState> {
        self.pm.subscribe()
    }

    async fn observe(&self, settings: &PgSettings) -> (LocalPg, Option<Probe>) {
        rampart_pg::observe_local(settings, &self.pm, &self.sql).await
    }

    async fn stop(&self, mode: StopMode, timeout: Duration) -> PgResult<StopOutcome> {
        self.pm.stop(mode, timeout).await
    }
}

impl Control for LocalServer {
    fn reconnect(&mut self, settings: &PgSettings) {
        self.sql = Arc::new(Sql::new(settings));
    }

    async fn disconnect(&self) {
        self.sql.disconnect().await
    }

    async fn reload(&self) -> PgResult<()> {
        self.sql.reload().await
    }

    async fn list_slots(&self) -> PgResult<Vec<ExistingSlot>> {
        self.sql.list_slots().await
    }

    async fn apply_slot_steps(&self, steps: &SlotSteps) -> SlotReport {
        self.sql.apply_slot_steps(steps).await
    }

    async fn pending_restart(&self) -> PgResult<Vec<PendingRestart>> {
        self.sql.pending_restart().await
    }

    async fn wait_for_synchronous_standby_names(&self, want: &str, limit: Duration) -> PgResult<bool> {
        self.sql.wait_for_synchronous_standby_names(want, limit).await
    }
}

impl DataFiles for LocalServer {
    fn write_pgpass(&self, settings: &PgSettings) -> PgResult<()> {
        rampart_pg::write_pgpass(settings)
    }

    fn write_config(&self, settings: &PgSettings, role: &StartRole) -> PgResult<()> {
        rampart_pg::write_config(settings, role)
    }

    async fn wipe_data_dir(&self, data_dir: &Path) -> PgResult<()> {
        rampart_pg::wipe_data_dir(data_dir).await
    }

    fn timeline_history(&self, data_dir: &Path, timeline: u32) -> PgResult<Vec<rampart_core::model::HistoryEntry>> {
        rampart_pg::read_history(data_dir, timeline)
    }

    async fn move_data_dir_aside(&self, data_dir: &Path) -> PgResult<()> {
        rampart_pg::move_data_dir_aside(data_dir).await
    }
}

impl Jobs<EtcdDcs> for LocalServer {
    fn run_job(
        &self,
        job: Job,
        ctx: JobContext<EtcdDcs>,
        wake: Arc<Notify>,
    ) -> impl std::future::Future<Output = JobResult> + Send + 'static {
        let (pm, sql) = (self.pm.clone(), self.sql.clone());
        async move { jobs::run(job, &ctx, &pm, &sql, &wake).await }
    }
}

/// `SystemTime`.
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

impl super::VirtualAddress for crate::vip::HostAddress {
    fn held(&self) -> Result<bool, String> {
        crate::vip::HostAddress::held(self)
    }

    async fn take(&mut self) -> Result<(), String> {
        crate::vip::HostAddress::take(self).await
    }

    async fn give_up(&mut self, limit: Duration) -> Result<(), String> {
        crate::vip::HostAddress::give_up(self, limit).await
    }
}
