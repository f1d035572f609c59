//! What the agent observed this cycle, as plain data: time, the DCS snapshot, local PostgreSQL
//! and (during a leader race) the other members' own reports.
//!
//! The core never fetches any of this itself; the driver gathers it and the core decides on it.
//! A DCS failure is data here ([`DcsView::Unavailable`]), not an exception, so the fencing rule
//! for an isolated leader is an ordinary, table-testable branch.

use crate::lsn::{Lsn, Timeline};
use crate::model::Cluster;
use crate::roles::{WalsenderState, WalsenderSync};

/// Monotonic milliseconds since an arbitrary origin (the agent's start). Injected, never read
/// from a clock inside the core, so simulations can run on virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + secs` seconds.
    pub fn plus_secs(self, secs: u64) -> Millis {
        Millis(self.0.saturating_add(secs.saturating_mul(1000)))
    }
    /// `self + ms` milliseconds.
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    /// Milliseconds from `self` until `later` (0 if `later` is not later).
    pub fn until(self, later: Millis) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

/// `pg_controldata`'s "Database cluster state".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// "in production": running as primary, or crashed while primary.
    InProduction,
    /// "shut down": cleanly stopped primary.
    ShutDown,
    /// "shut down in recovery": cleanly stopped replica.
    ShutDownInRecovery,
    /// "in archive recovery": running as replica, or crashed while replica.
    InArchiveRecovery,
    /// "in crash recovery".
    InCrashRecovery,
    /// "shutting down".
    ShuttingDown,
    /// Anything else ("starting up", ...).
    Other,
}

impl ClusterState {
    /// Whether the data directory was last used by a primary (so it may have diverged from a
    /// newer timeline and needs pg_rewind before following another leader).
    pub fn was_primary(self) -> bool {
        matches!(self, ClusterState::InProduction | ClusterState::ShutDown | ClusterState::ShuttingDown)
    }

    /// Parses pg_controldata's wording.
    pub fn parse(s: &str) -> ClusterState {
        match s.trim() {
            "in production" => ClusterState::InProduction,
            "shut down" => ClusterState::ShutDown,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            "in crash recovery" => ClusterState::InCrashRecovery,
            "shutting down" => ClusterState::ShuttingDown,
            _ => ClusterState::Other,
        }
    }
}

/// The parts of `pg_controldata` the core needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    /// Database system identifier.
    pub sysid: String,
    /// Cluster state.
    pub state: ClusterState,
    /// "Latest checkpoint's TimeLineID".
    pub timeline: Timeline,
    /// "Latest checkpoint location".
    pub checkpoint_lsn: Lsn,
    /// "Min recovery ending loc's timeline" (0 when unset): for a server stopped in recovery, the
    /// timeline its replay had reached, which may be newer than its last restartpoint's.
    pub min_recovery_timeline: Timeline,
    /// "Minimum recovery ending location" (0/0 when unset): with `min_recovery_timeline`, how
    /// far a server stopped in recovery had replayed.
    pub min_recovery_lsn: Lsn,
    /// The hot-standby-critical settings the control file records (for a replica: what the
    /// primary's WAL it replayed needs).
    pub hot_standby: crate::hot_standby::Values,
}

impl ControlData {
    /// Where this data directory's WAL ended, as (timeline, position) pairs that each hold
    /// together: its latest checkpoint, and for a replica how far its replay had gone.
    pub fn wal_ends(&self) -> Vec<(Timeline, Lsn)> {
        let mut out = vec![(self.timeline, self.checkpoint_lsn)];
        if self.min_recovery_timeline != 0 {
            out.push((self.min_recovery_timeline, self.min_recovery_lsn));
        }
        out
    }

    /// The timeline this data directory's WAL has reached: the latest checkpoint's, or for a
    /// replica the timeline its replay had reached if newer (a replica that followed a promotion
    /// keeps its last restartpoint on the old timeline until the next one). Patroni reads the
    /// same two fields.
    pub fn wal_timeline(&self) -> Timeline {
        let in_recovery = matches!(self.state, ClusterState::ShutDownInRecovery | ClusterState::InArchiveRecovery);
        match in_recovery {
            true => self.timeline.max(self.min_recovery_timeline),
            false => self.timeline,
        }
    }
}

/// State of the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// Missing or empty: nothing to lose, can bootstrap or clone.
    Empty,
    /// A usable PostgreSQL data directory.
    Initialized(ControlData),
    /// Present but not usable (not empty, no valid control file): never wiped automatically.
    Invalid(String),
}

/// WAL positions reported by a running server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalPositions {
    /// Primary: `pg_current_wal_flush_lsn()`.
    pub flush: Option<Lsn>,
    /// Replica: `pg_last_wal_receive_lsn()`.
    pub received: Option<Lsn>,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub replayed: Option<Lsn>,
}

impl WalPositions {
    /// The furthest position this server has (what a leader race compares).
    pub fn best(&self) -> Lsn {
        [self.flush, self.received, self.replayed].into_iter().flatten().max().unwrap_or_default()
    }
}

/// One row of `pg_stat_replication` on this server: a standby streaming from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Walsender {
    /// The standby's `application_name` (its member name: replicas set it in `primary_conninfo`).
    pub application_name: String,
    /// `startup`, `catchup`, `streaming`, `backup` or `stopping`.
    pub state: WalsenderState,
    /// `async`, `potential`, `sync` or `quorum`, as PostgreSQL judges it under its
    /// `synchronous_standby_names`.
    pub sync_state: WalsenderSync,
    /// Last position the standby wrote to disk (`write_lsn`).
    pub write: Option<Lsn>,
    /// Last position the standby flushed (`flush_lsn`): what an ordinary synchronous commit waits
    /// for.
    pub flush: Option<Lsn>,
    /// Last position the standby replayed (`replay_lsn`).
    pub replay: Option<Lsn>,
}

/// A running, queryable PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningPg {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Current timeline.
    pub timeline: Timeline,
    /// WAL positions.
    pub wal: WalPositions,
    /// A WAL receiver is streaming.
    pub streaming: bool,
    /// The WAL receiver's timeline (`pg_stat_wal_receiver.received_tli`): the one the startup
    /// process asked it to stream, then the one it last flushed. Unlike `timeline`, whose fallback
    /// for a replica is the control file's (as old as the last restartpoint), it is current;
    /// `None` while no WAL receiver runs.
    pub receiver_timeline: Option<Timeline>,
    /// How long ago the WAL receiver last heard from its upstream, in ms, by PostgreSQL's own
    /// clock (`now - pg_stat_wal_receiver.last_msg_receipt_time`); `None` when unknown.
    pub upstream_silent_ms: Option<u64>,
    /// `(host, port)` of `primary_conninfo`, if set.
    pub upstream: Option<(String, u16)>,
    /// The standbys streaming from this server (`pg_stat_replication`).
    pub walsenders: Vec<Walsender>,
    /// `synchronous_standby_names` as this server applies it now (`current_setting`).
    pub synchronous_standby_names: String,
    /// Which position of a standby a commit waits for under the `synchronous_commit` this
    /// server applies now.
    pub commit_waits_for: crate::sync::AckPoint,
    /// Replica: `pg_get_wal_replay_pause_state()`.
    pub replay_pause: crate::hot_standby::ReplayPause,
    /// The hot-standby-critical settings the server runs with.
    pub hot_standby: crate::hot_standby::Values,
    /// Primary: its persistent replication slots as listed right after `wal.flush` (`None` in
    /// recovery, or when not read); the leader publishes them with that position in `status`.
    pub slots: Option<Vec<crate::slots::ExistingSlot>>,
}

/// The postmaster as the agent sees it.
// One per observation, never held in numbers: boxing the running state would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgProcess {
    /// Not running, and it was stopped on purpose (or never started).
    Stopped,
    /// Not running, and it was not stopped on purpose (killed or crashed).
    Crashed,
    /// The postmaster is alive but does not accept queries yet (starting, recovering).
    Starting,
    /// Alive and answering queries.
    Running(RunningPg),
}

impl PgProcess {
    /// Whether a postmaster process exists.
    pub fn is_alive(&self) -> bool {
        matches!(self, PgProcess::Starting | PgProcess::Running(_))
    }
    /// Running as a primary (accepting writes).
    pub fn is_primary(&self) -> bool {
        matches!(self, PgProcess::Running(r) if !r.in_recovery)
    }
}

/// Local PostgreSQL, as probed this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPg {
    /// The data directory.
    pub data: DataDir,
    /// The server process.
    pub process: PgProcess,
}

impl LocalPg {
    /// Our last WAL position, as a leader publishes it when it gives the lock up: the flush
    /// position of a running primary, else the last checkpoint of the data directory (`None`
    /// without one).
    pub fn last_position(&self) -> Option<u64> {
        match (&self.process, &self.data) {
            (PgProcess::Running(RunningPg { wal: WalPositions { flush: Some(l), .. }, .. }), _) => Some(l.0),
            (_, DataDir::Initialized(c)) => Some(c.checkpoint_lsn.0),
            _ => None,
        }
    }
}

/// A long action the driver runs off the loop (so the leader keeps renewing its lock meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// initdb, configuration, first start, roles.
    Bootstrap,
    /// pg_basebackup from another member.
    Clone,
    /// pg_rewind against the leader.
    Rewind,
    /// Start PostgreSQL and wait until it accepts connections.
    Start,
    /// Promote and checkpoint.
    Promote,
    /// Stop and start again in the same role.
    Restart,
    /// Stop, wipe the data directory, clone again.
    Reinitialize,
}

impl JobKind {
    /// Human wording used in the per-cycle message.
    pub fn describe(self) -> &'static str {
        match self {
            JobKind::Bootstrap => "bootstrap",
            JobKind::Clone => "replica clone",
            JobKind::Rewind => "pg_rewind",
            JobKind::Start => "start of PostgreSQL",
            JobKind::Promote => "promotion",
            JobKind::Restart => "restart",
            JobKind::Reinitialize => "reinitialization",
        }
    }
}

/// The state of the background job, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Still running.
    Running(JobKind),
    /// Finished since the last cycle; reported exactly once.
    Finished(JobKind, Result<(), JobError>),
}

/// Why a job failed, as far as the core's next decision depends on it. Whatever the message
/// says, only the variant chooses between trying again and waiting for an operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A [`crate::Job::Rewind`] did not run pg_rewind at all: its source (the leader) did not
    /// answer as a primary. That is a reason to try again, not a failed rewind.
    #[error("the rewind source {source_name} is not available: {reason}")]
    RewindSourceUnavailable {
        /// The member that was to be the source.
        source_name: String,
        /// What the check saw.
        reason: String,
    },
    /// pg_rewind failed before its point of no return (the crash recovery it runs first found
    /// the disk full, the source went away while the file lists were read, ...): the data
    /// directory is as it was, so trying again later is safe. A failure after that point may
    /// have left it half rewritten and is [`JobError::Failed`].
    #[error("pg_rewind failed before changing the data directory ({status}): {output_tail}")]
    RewindUntouched {
        /// How pg_rewind exited.
        status: String,
        /// The end of its output.
        output_tail: String,
    },
    /// Any other failure; the text is for the log and the operator.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for JobError {
    fn from(text: String) -> JobError {
        JobError::Failed(text)
    }
}

impl From<&str> for JobError {
    fn from(text: &str) -> JobError {
        JobError::Failed(text.to_string())
    }
}

/// What another member said about itself (`GET /patroni`), fetched during a leader race.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerReport {
    /// Member name.
    pub name: String,
    /// `None` if it did not answer in time (ignored, as in Patroni).
    pub status: Option<PeerStatus>,
}

/// The fields of a peer's `/patroni` answer that matter for the race.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    /// It reports itself running as primary.
    pub is_primary: bool,
    /// Its furthest WAL position.
    pub wal: Lsn,
    /// Its timeline.
    pub timeline: Timeline,
    /// May it be promoted (`nofailover`, priority).
    pub can_fail_over: bool,
    /// Its failover priority.
    pub priority: i64,
}

/// Whether the DCS could be read.
#[derive(Clone, Debug, PartialEq)]
pub enum DcsView<'a> {
    /// A fresh, consistent snapshot.
    Ok(&'a Cluster),
    /// The read failed within its deadline; the reason is for the log.
    Unavailable(String),
}

/// An operator's request for this node, handed over by the REST API (or `rampart restart`).
/// The core decides whether it may run now; filters such as "only if a restart is pending" were
/// already checked by the API against the node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Restart PostgreSQL in its current role.
    Restart,
    /// Throw the data directory away and clone it again.
    Reinitialize {
        /// Cancel a running job to do it.
        force: bool,
        /// Clone from the leader, not from a `clonefrom` member.
        from_leader: bool,
    },
}

/// Everything the core decides on in one cycle.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    /// Now, on the monotonic clock.
    pub now: Millis,
    /// Now, as unix milliseconds: only for comparing with times operators wrote (a scheduled
    /// switchover). Timing of the lease never uses it.
    pub wall_clock_ms: i64,
    /// An operator's request waiting for an answer.
    pub request: Option<Request>,
    /// The DCS.
    pub dcs: DcsView<'a>,
    /// Local PostgreSQL.
    pub local: &'a LocalPg,
    /// Background job.
    pub job: Option<JobState>,
    /// Other members' reports; gathered by the driver only while there is no leader.
    pub peers: Option<&'a [PeerReport]>,
    /// Leader in `failsafe_mode` with the DCS unreachable: this cycle's `POST /failsafe` round
    /// to the members [`crate::HaNode::failsafe_targets`] named.
    pub failsafe_round: Option<&'a crate::failsafe::Round>,
    /// Replica: the last `POST /failsafe` it accepted from a primary.
    pub failsafe_ping: Option<&'a crate::failsafe::Ping>,
    /// `watchdog.mode: required` and the watchdog cannot be armed: why (for the log). `None`
    /// when the mode is not `required` or the device is usable (see
    /// [`crate::watchdog::required_gate`]).
    pub watchdog_unusable: Option<&'a str>,
}
