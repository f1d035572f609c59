//! What the core asks the driver to do, and what the driver reports back.
//!
//! Actions are executed in order; when one fails, the rest of the list is skipped and the loop
//! runs again at once on fresh observations. Results that change the core's memory (lock
//! renewals, the bootstrap race) come back through [`crate::HaNode::advance`].

use crate::model::SyncState;
use crate::observe::{JobKind, Millis};
use crate::standby_cluster::StandbyCluster;

/// A member to replicate or clone from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Member name (also names its replication slot on the leader).
    pub name: String,
    /// PostgreSQL host.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
}

/// The role PostgreSQL is started in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartRole {
    /// Writable primary (no `standby.signal`).
    Primary,
    /// Read-only replica, streaming from `upstream` when there is one.
    Replica {
        /// Where to stream from; `None` starts read-only with no upstream (used when there is no
        /// leader, and when fencing ourselves off a DCS we cannot reach).
        upstream: Option<Upstream>,
    },
    /// Read-only standby leader of a standby cluster: recovers from the other cluster (streams
    /// from its `host` through its `primary_slot_name`, and/or restores with its
    /// `restore_command`), never promoted while the section is set.
    StandbyLeader(StandbyCluster),
}

/// For logs: the role and what it follows, never the section's commands (a `restore_command`
/// may carry credentials).
impl std::fmt::Display for StartRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartRole::Primary => f.write_str("primary"),
            StartRole::Replica { upstream: Some(u) } => write!(f, "replica of {} ({}:{})", u.name, u.host, u.port),
            StartRole::Replica { upstream: None } => f.write_str("replica streaming from nobody"),
            StartRole::StandbyLeader(sc) => write!(f, "standby leader following {}", sc.describe()),
        }
    }
}

impl StartRole {
    /// Whether PostgreSQL runs in recovery in this role.
    pub fn in_recovery(&self) -> bool {
        !matches!(self, StartRole::Primary)
    }
}

/// How to stop PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: roll back sessions, write a shutdown checkpoint, let replicas receive it.
    Fast,
    /// SIGQUIT: stop now, crash recovery on next start. Used for fencing.
    Immediate,
}

/// One step for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Race for the `initialize` key (create if absent). Result: [`ActionResult::InitializeRace`].
    TryInitialize,
    /// Give up a bootstrap we started: delete `initialize` and move the data directory we
    /// created aside (`<data_dir>.failed`, as Patroni does), for inspection.
    CancelInitialize,
    /// After a successful bootstrap: record the system identifier in `initialize` and seed the
    /// `config` key from `bootstrap.dcs` if it is absent.
    RecordInitialize {
        /// System identifier to record.
        sysid: String,
    },
    /// Take the leader lock if nobody holds it. Result: [`ActionResult::Leader`].
    AcquireLeader,
    /// Renew our leader lock (and lease). Result: [`ActionResult::Leader`].
    RenewLeader,
    /// Delete the leader key if it is still ours, publishing our last WAL position first (in
    /// `status`, as Patroni's `delete_leader(last_lsn)` does), so that the replicas can tell
    /// whether they are caught up.
    ReleaseLeader {
        /// The position to publish: the flush position of a running primary, else the last
        /// checkpoint of the data directory ([`crate::observe::LocalPg::last_position`]); `None`
        /// publishes nothing.
        last_position: Option<u64>,
    },
    /// Write the leader's `status` key: its WAL position, and the slots and retained member
    /// slots of the last slot sync.
    WriteStatus(crate::model::Status),
    /// Publish the timeline history of the running primary (its history file for `timeline`)
    /// in the `history` key, which lacks its last switch: the write after the promotion failed.
    PublishHistory {
        /// The primary's timeline.
        timeline: crate::lsn::Timeline,
    },
    /// `failsafe_mode`: write the `failsafe` key with this topology (it changed).
    WriteFailsafe(crate::failsafe::Topology),
    /// Bring the local replication slots to these targets: list them, let
    /// [`crate::slots::reconcile`] choose the steps, run them. Result:
    /// [`ActionResult::SlotsSynced`] (the leader publishes in `status` the slots it kept; a
    /// replica copies the logical slots it lacks).
    SyncSlots(crate::slots::SlotTargets),
    /// Start a background job.
    StartJob(Job),
    /// Cancel the running job and wait until it is gone (the tools it ran are killed with it; a
    /// postmaster it started keeps running and is observed next cycle). It reports no result.
    CancelJob,
    /// Stop PostgreSQL and wait for the postmaster to exit.
    Stop(StopMode),
    /// Point a running replica at a (new) upstream: rewrite `primary_conninfo` and reload.
    Follow {
        /// New upstream; `None` stops streaming.
        upstream: Option<Upstream>,
    },
    /// Point the running standby leader at the other cluster as the section describes it now:
    /// rewrite its recovery settings and reload (as [`Action::Follow`]).
    FollowRemote(StandbyCluster),
    /// Remove a data directory we may not use (after a failed rewind, when allowed).
    WipeDataDir,
    /// Clear the `failover` key (the request was carried out, is stale, or cannot be done).
    ClearFailover,
    /// Write the `sync` key with compare-and-swap: only if its modification revision is still
    /// `expected_revision` (0: only if it does not exist). A lost compare stops the plan, so a
    /// change of `synchronous_standby_names` that was meant to follow it does not happen.
    WriteSync {
        /// The new value.
        state: SyncState,
        /// Revision the key must still have.
        expected_revision: i64,
    },
    /// Delete the `sync` key if its revision is still `expected_revision` (synchronous mode was
    /// turned off).
    DeleteSync {
        /// Revision the key must still have.
        expected_revision: i64,
    },
    /// Set the leader-managed `synchronous_standby_names` (`""` for asynchronous) through the
    /// parameter rendering, reload, and wait until the server applies it. It overrides any value
    /// in `postgresql.parameters` while `synchronous_mode` is on. Result when the server did not
    /// show it in time: [`ActionResult::SyncNamesUnconfirmed`].
    SetSynchronousStandbyNames(String),
    /// An unrecoverable condition: log it and exit non-zero without touching PostgreSQL.
    Fatal(String),
    /// Run the `on_role_change` callback with this role (e.g. `demoted` when a leader whose
    /// PostgreSQL would not start gives the lock up, as Patroni reports it).
    RoleChangeCallback(String),
}

impl Action {
    /// Whether executing this action writes to the DCS (a failure then means etcd did not
    /// answer within the action's deadline).
    pub fn writes_dcs(&self) -> bool {
        matches!(
            self,
            Action::TryInitialize
                | Action::CancelInitialize
                | Action::RecordInitialize { .. }
                | Action::AcquireLeader
                | Action::RenewLeader
                | Action::ReleaseLeader { .. }
                | Action::WriteStatus(_)
                | Action::WriteFailsafe(_)
                | Action::PublishHistory { .. }
                | Action::ClearFailover
                | Action::WriteSync { .. }
                | Action::DeleteSync { .. }
        )
    }
}

/// Long-running work, done off the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// initdb and first start as primary; creates the configured roles.
    Bootstrap,
    /// Bootstrap of a standby cluster: make the data directory from the other cluster with the
    /// section's `create_replica_methods` (`basebackup` from its `host` by default). Nothing is
    /// started; reported as a bootstrap.
    BootstrapStandby(StandbyCluster),
    /// Make this replica's data directory with the configured replica creation methods, copying
    /// from this member; `None`: with no member to copy from, only the methods that need none.
    Clone(Option<Upstream>),
    /// pg_rewind against this member.
    Rewind(Upstream),
    /// Start PostgreSQL in this role and wait until it answers.
    Start(StartRole),
    /// Run `pre_promote`, then promote a replica holding the lock, checkpoint, and record the new
    /// timeline in `history`. Fails (and promotes nothing) when `pre_promote` exits non-zero.
    Promote,
    /// Stop PostgreSQL cleanly and start it again in this role.
    Restart(StartRole),
    /// Stop PostgreSQL, wipe the data directory and clone it again from this member.
    Reinitialize(Upstream),
    /// Replica: read the state of these logical slots from the leader (`from`), stop
    /// PostgreSQL cleanly, install the copies in `pg_replslot`, start again as a replica of
    /// `upstream` (PostgreSQL 15 cannot create a logical slot in recovery). Reported as a restart.
    CopyLogicalSlots {
        /// The leader, which has the slots.
        from: Upstream,
        /// Where to stream from afterwards (the leader, or the member this one cascades from).
        upstream: Upstream,
        /// Slot names.
        slots: Vec<String>,
    },
}

impl Job {
    /// The kind, as reported back in [`crate::observe::JobState`].
    pub fn kind(&self) -> JobKind {
        match self {
            Job::Bootstrap | Job::BootstrapStandby(_) => JobKind::Bootstrap,
            Job::Clone(_) => JobKind::Clone,
            Job::Rewind(_) => JobKind::Rewind,
            Job::Start(_) => JobKind::Start,
            Job::Promote => JobKind::Promote,
            Job::Restart(_) => JobKind::Restart,
            Job::Reinitialize(_) => JobKind::Reinitialize,
            Job::CopyLogicalSlots { .. } => JobKind::Restart,
        }
    }
}

impl Job {
    /// The role the configuration files render for once this job started (its `primary_conninfo`
    /// on a replica); `None` when the job does not rewrite them for a role.
    pub fn configures(&self) -> Option<StartRole> {
        match self {
            Job::Start(role) | Job::Restart(role) => Some(role.clone()),
            Job::Promote => Some(StartRole::Primary),
            Job::CopyLogicalSlots { upstream, .. } => Some(StartRole::Replica { upstream: Some(upstream.clone()) }),
            Job::Bootstrap | Job::BootstrapStandby(_) | Job::Clone(_) | Job::Rewind(_) | Job::Reinitialize(_) => None,
        }
    }
}

/// Results the core needs to remember.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionResult {
    /// Outcome of [`Action::TryInitialize`]: whether we created the key.
    InitializeRace {
        /// We created it and must bootstrap.
        won: bool,
    },
    /// Outcome of [`Action::AcquireLeader`] or [`Action::RenewLeader`].
    Leader {
        /// The lock is ours after the operation.
        held: bool,
        /// When the request was *sent*. etcd starts the lease's TTL only when it processes the
        /// request, which is later, so a deadline computed from this instant is conservative.
        sent_at: Millis,
        /// TTL of the lease the lock is attached to after the operation. It can differ from the
        /// dynamic `ttl` the core last saw (the lease moves to a new TTL only on a write), and the
        /// fencing deadline must follow the lease, not the configuration.
        ttl_secs: u64,
    },
    /// The configuration files were written for this role: an [`Action::Follow`] ran, or a job
    /// that [`Job::configures`] a role started.
    Configured(StartRole),
    /// The leader key was released (or the release was attempted at shutdown).
    LeaderReleased,
    /// [`Action::SetSynchronousStandbyNames`]: the value is in the configuration files from now
    /// on (whether or not the server shows it yet); every later rewrite renders it.
    SyncNamesWritten(String),
    /// `synchronous_standby_names` was written and reloaded, but the server did not show the new
    /// value in time: it may be in force or not, so the leader sets it again before anything else.
    SyncNamesUnconfirmed(String),
    /// [`Action::SyncSlots`] ran.
    SlotsSynced {
        /// The slots the server had before the steps ran (a leader publishes their positions).
        existing: Vec<crate::slots::ExistingSlot>,
        /// Replica: logical slots the leader has and this server lacks, or whose copy here can
        /// no longer be advanced (the WAL it needs is gone): they are copied.
        missing: Vec<String>,
    },
}

/// The core's answer to an operator's [`crate::observe::Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It runs as the job this plan starts; answer the operator when that job ends.
    Started,
    /// It will not run, for this reason (Patroni's wording where there is one).
    Refused(String),
}

/// The core's decision for one cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Steps to execute, in order.
    pub actions: Vec<Action>,
    /// The answer to the operator's request, if the observation carried one.
    pub answer: Option<Answer>,
    /// One line saying what was decided and why (logged every cycle, as Patroni does).
    pub message: String,
    /// Run the next cycle no later than this, even if nothing wakes the loop.
    pub next_cycle: Millis,
    /// Whether this member holds the cluster's virtual address through this plan (rule:
    /// [`crate::address::may_hold`]); when not, it is given up before the first action.
    pub holds_address: bool,
}

impl Plan {
    /// Whether changed PostgreSQL parameters may be applied after this plan ran: only to a
    /// server that runs, so not while a job owns it (`job_running`) and not in the cycle that
    /// just stopped it.
    pub fn lets_parameters_apply(&self, job_running: bool) -> bool {
        !job_running && !self.actions.iter().any(|a| matches!(a, Action::Stop(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_apply_only_to_a_server_no_job_owns_and_this_plan_did_not_stop() {
        let plan = |actions| Plan {
            actions,
            answer: None,
            message: String::new(),
            next_cycle: Millis(0),
            holds_address: false,
        };
        assert!(plan(vec![Action::RenewLeader]).lets_parameters_apply(false));
        assert!(!plan(vec![Action::RenewLeader]).lets_parameters_apply(true), "a job owns the server");
        assert!(!plan(vec![Action::Stop(StopMode::Fast)]).lets_parameters_apply(false), "just stopped");
    }
}
