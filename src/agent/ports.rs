//! The agent's ports: everything the driver ([`super::driver::Agent`]) touches outside itself,
//! as small traits, so that the same loop runs against the real world ([`real`]) and against
//! the in-memory world of the simulation and the driver's unit tests.
//!
//! * the DCS: [`rampart_dcs::Dcs`] (its own crate's trait);
//! * the local PostgreSQL: the postmaster ([`Server`]), the agent's control connection
//!   ([`Control`]), the files the agent writes or reads ([`DataFiles`]) and the long jobs
//!   ([`Jobs`]: the job runner of [`super::jobs`] is the real one);
//! * the peers' REST API: [`rampart_api::MemberProbe`] (already a trait);
//! * the watchdog device: [`WatchdogDevice`];
//! * the virtual address on this host: [`VirtualAddress`];
//! * the clock: monotonic time is tokio's [`tokio::time::Instant`] (paused test time is virtual
//!   time), wall-clock time is [`WallClock`].
//!
//! Invariant: the production implementations are thin wrappers of the adapters (`rampart_pg`,
//! the Linux watchdog, `SystemTime`): no decision lives in a port, so what the simulation shows
//! about the driver holds for the agent that runs.

pub mod real;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rampart_core::observe::LocalPg;
use rampart_core::slots::{ExistingSlot, SlotSteps};
use rampart_core::{Job, StartRole, StopMode};
use rampart_dcs::Dcs;
use rampart_pg::{PendingRestart, PgSettings, PostmasterState, Probe, SlotReport, StopOutcome};
use tokio::sync::{watch, Notify};

use super::jobs::{JobContext, JobResult};

/// Result of a port call on the local PostgreSQL.
pub type PgResult<T> = rampart_pg::Result<T>;

/// The postmaster: observing it and stopping it (jobs start it).
pub trait Server: Send + Sync {
    /// Takes over a postmaster already running on the data directory (after an agent restart).
    fn adopt(&self);

    /// Changes of the postmaster's state (its exit wakes the loop at once).
    fn state_changes(&self) -> watch::Receiver<PostmasterState>;

    /// The local server as the core sees it, with the full probe while it answers.
    fn observe(&self, settings: &PgSettings) -> impl Future<Output = (LocalPg, Option<Probe>)> + Send;

    /// Stops the postmaster in `mode`, killing it after `timeout`.
    fn stop(&self, mode: StopMode, timeout: Duration) -> impl Future<Output = PgResult<StopOutcome>> + Send;
}

/// The agent's control connection to its own server.
pub trait Control: Send + Sync {
    /// Connects anew with these settings' credentials at the next query (after a reload).
    fn reconnect(&mut self, settings: &PgSettings);

    /// Drops the connection (the server stopped).
    fn disconnect(&self) -> impl Future<Output = ()> + Send;

    /// `pg_reload_conf()`.
    fn reload(&self) -> impl Future<Output = PgResult<()>> + Send;

    /// The replication slots of the server.
    fn list_slots(&self) -> impl Future<Output = PgResult<Vec<ExistingSlot>>> + Send;

    /// Creates, advances and drops slots as `steps` say.
    fn apply_slot_steps(&self, steps: &SlotSteps) -> impl Future<Output = SlotReport> + Send;

    /// Parameters waiting for a restart.
    fn pending_restart(&self) -> impl Future<Output = PgResult<Vec<PendingRestart>>> + Send;

    /// Waits up to `limit` until the server shows `synchronous_standby_names = want`.
    fn wait_for_synchronous_standby_names(
        &self,
        want: &str,
        limit: Duration,
    ) -> impl Future<Output = PgResult<bool>> + Send;
}

/// The files of the local server the agent writes or reads itself.
pub trait DataFiles: Send + Sync {
    /// Writes the replication password file.
    fn write_pgpass(&self, settings: &PgSettings) -> PgResult<()>;

    /// Writes postgresql.conf (and the recovery settings for `role`) and pg_hba.conf.
    fn write_config(&self, settings: &PgSettings, role: &StartRole) -> PgResult<()>;

    /// Empties the data directory.
    fn wipe_data_dir(&self, data_dir: &Path) -> impl Future<Output = PgResult<()>> + Send;

    /// The history of `timeline` (its history file: where each earlier timeline ended).
    fn timeline_history(&self, data_dir: &Path, timeline: u32) -> PgResult<Vec<rampart_core::model::HistoryEntry>>;

    /// Moves a failed bootstrap's data directory aside.
    fn move_data_dir_aside(&self, data_dir: &Path) -> impl Future<Output = PgResult<()>> + Send;
}

/// Long actions (bootstrap, clone, rewind, start, promotion...), run off the loop.
pub trait Jobs<D>: Send + Sync {
    /// Runs `job` to its end; `wake` may be notified on the way when the loop should look early.
    fn run_job(
        &self,
        job: Job,
        ctx: JobContext<D>,
        wake: Arc<Notify>,
    ) -> impl Future<Output = JobResult> + Send + 'static;
}

/// The watchdog device: arming opens it, a keepalive feeds it, disarming closes it cleanly.
pub trait WatchdogDevice: Send {
    /// Whether the device at `path` could be opened for writing (a cheap check that arms nothing).
    fn writable(&self, path: &Path) -> Result<(), String>;

    /// Opens (arms) the device at `path` with `timeout_secs`; the timeout it applied.
    fn arm(&mut self, path: &Path, timeout_secs: u64) -> Result<u64, String>;

    /// Feeds the armed device.
    fn keepalive(&mut self) -> Result<(), String>;

    /// Closes the armed device with the magic character, so it does not fire.
    fn disarm(&mut self);
}

pub use crate::vip::keeper::VirtualAddress;

/// Wall-clock time, for what is compared with times people wrote (scheduled restarts and
/// switchovers) and for what the REST API shows.
pub trait WallClock: Send + Sync {
    /// Now, as unix milliseconds.
    fn unix_ms(&self) -> i64;
}

/// One set of ports: the types one agent runs over.
pub trait Ports: 'static {
    /// The DCS.
    type Dcs: Dcs + Clone + 'static;
    /// The local PostgreSQL (a cheap handle: jobs get a clone).
    type Pg: Server + Control + DataFiles + Jobs<Self::Dcs> + Clone + 'static;
    /// The watchdog device.
    type Watchdog: WatchdogDevice;
    /// The virtual address.
    type Address: VirtualAddress;
    /// The wall clock.
    type Clock: WallClock;
}

/// The ports' values one agent is built with.
pub struct PortSet<P: Ports> {
    /// The DCS handle.
    pub dcs: P::Dcs,
    /// The local PostgreSQL.
    pub pg: P::Pg,
    /// The watchdog device.
    pub watchdog: P::Watchdog,
    /// The virtual address, when the configuration has a `vip` section.
    pub address: Option<P::Address>,
    /// The wall clock.
    pub clock: P::Clock,
    /// The peers' REST API.
    pub peers: Arc<dyn rampart_api::MemberProbe>,
}
