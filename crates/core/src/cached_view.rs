//! When a cycle may decide on the watch-fed view of the cluster, and when it must read etcd
//! linearizably first.
//!
//! The agent keeps a copy of its cluster's keys fed by an etcd watch, so that a quiet cycle costs
//! one lease keep-alive instead of a range read, a member-key write and a lock transaction. A
//! watch can lag (a stream on a member cut off from the others delivers nothing, and says so
//! late), so the copy is trusted only for decisions that neither take nor give up the leader lock.
//!
//! Invariant: every cycle whose decision could take the lock, release it, or stop a primary
//! because another member holds it, is decided on a linearizable read. Concretely, the copy is
//! enough only in the two steady states:
//! * this member holds the lock and its PostgreSQL runs (the leader renewing);
//! * another member holds the lock and this member's PostgreSQL is not a running primary (a
//!   replica following, or one being started or rebuilt to follow).
//!
//! And in neither of them if an operator asked for a switchover or failover, or if the cluster
//! is not initialized yet. Everything else (no leader key, a request, a primary under another
//! leader, a leader whose PostgreSQL is down) reads first.
//!
//! The copy also tells when the leader's lock needs no transaction ([`lock_renewal`]).

use crate::model::{Cluster, Leader};
use crate::observe::{LocalPg, PgProcess};

/// Why a cycle must read etcd rather than decide on its watch-fed copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFirst {
    /// No `initialize` key, or a bootstrap in progress: the bootstrap race is a lock decision.
    NotInitialized,
    /// No leader key: members race for the lock.
    NoLeader,
    /// A switchover or failover was requested: the leader may release the lock, a candidate
    /// may take it.
    Requested,
    /// This member holds the lock but its PostgreSQL is not running: it may restart it as
    /// primary or give the lock up.
    LeaderNotRunning,
    /// This member's PostgreSQL runs as a primary under another member's lock: it must stop
    /// being writable, which a stale copy must never cause nor delay.
    PrimaryUnderOtherLeader,
}

impl ReadFirst {
    /// For the debug log.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadFirst::NotInitialized => "cluster not initialized",
            ReadFirst::NoLeader => "no leader key",
            ReadFirst::Requested => "switchover or failover requested",
            ReadFirst::LeaderNotRunning => "leader's PostgreSQL not running",
            ReadFirst::PrimaryUnderOtherLeader => "primary under another member's lock",
        }
    }
}

/// `Ok` if member `me` may decide this cycle on `copy`, the watch-fed view; otherwise why it
/// must read etcd linearizably first. (Whether the copy is up to date at all, the watch's side of
/// the question, is the DCS adapter's to say; this rule is about what the decision may do.)
pub fn decide_on_copy(copy: &Cluster, me: &str, local: &LocalPg) -> Result<(), ReadFirst> {
    if copy.initialize.as_deref().is_none_or(str::is_empty) {
        return Err(ReadFirst::NotInitialized);
    }
    let Some(leader) = &copy.leader else { return Err(ReadFirst::NoLeader) };
    if copy.failover.as_ref().is_some_and(|f| *f != Default::default()) {
        return Err(ReadFirst::Requested);
    }
    let running_primary = matches!(&local.process, PgProcess::Running(r) if !r.in_recovery);
    if leader.name == me {
        if !matches!(local.process, PgProcess::Running(_)) {
            return Err(ReadFirst::LeaderNotRunning);
        }
    } else if running_primary {
        return Err(ReadFirst::PrimaryUnderOtherLeader);
    }
    Ok(())
}

/// How a leader renews its lock this cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockRenewal {
    /// The keep-alive this cycle already did: the lock lasts a ttl from when it was sent.
    ByKeepAlive,
    /// A transaction that writes the key back on our lease if it is ours or free.
    ByTransaction,
}

/// How member `me` renews the lock, given the leader key as the watch-fed copy shows it
/// (`copy_lock`; `None` when absent or when the copy cannot tell) and the lease this cycle's
/// keep-alive renewed (`kept_this_cycle`; `None` when there was none this cycle).
///
/// The keep-alive suffices only when the copy shows the key as ours on that very lease: a key on
/// a live lease goes only by an explicit delete, which the watch reports. Anything else (no
/// keep-alive this cycle, another lease, another holder, no key) takes the transaction, which
/// also finds out the truth. Trade-off, as in Patroni: a key deleted by hand is noticed from the
/// watch, not from the next cycle's transaction.
pub fn lock_renewal(copy_lock: Option<&Leader>, me: &str, kept_this_cycle: Option<i64>) -> LockRenewal {
    match (copy_lock, kept_this_cycle) {
        (Some(lock), Some(lease)) if lock.name == me && lock.lease == lease => LockRenewal::ByKeepAlive,
        _ => LockRenewal::ByTransaction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Failover;
    use crate::observe::{DataDir, RunningPg};

    fn cluster(leader: Option<&str>) -> Cluster {
        Cluster {
            initialize: Some("7300000000000000001".into()),
            leader: leader.map(|n| Leader { name: n.into(), lease: 7, mod_revision: 3 }),
            ..Default::default()
        }
    }

    fn pg(process: PgProcess) -> LocalPg {
        LocalPg { data: DataDir::Empty, process }
    }

    fn running(in_recovery: bool) -> PgProcess {
        PgProcess::Running(RunningPg { in_recovery, ..Default::default() })
    }

    #[test]
    fn steady_leader_decides_on_the_copy() {
        assert_eq!(decide_on_copy(&cluster(Some("n1")), "n1", &pg(running(false))), Ok(()));
    }

    #[test]
    fn steady_replica_decides_on_the_copy_whatever_its_postgres_does() {
        for process in [running(true), PgProcess::Stopped, PgProcess::Starting, PgProcess::Crashed] {
            assert_eq!(decide_on_copy(&cluster(Some("n1")), "n2", &pg(process.clone())), Ok(()), "{process:?}");
        }
    }

    #[test]
    fn standby_leader_decides_on_the_copy() {
        // A standby cluster's leader holds the lock with PostgreSQL in recovery.
        assert_eq!(decide_on_copy(&cluster(Some("n1")), "n1", &pg(running(true))), Ok(()));
    }

    #[test]
    fn no_leader_reads_first() {
        assert_eq!(decide_on_copy(&cluster(None), "n2", &pg(running(true))), Err(ReadFirst::NoLeader));
        assert_eq!(decide_on_copy(&cluster(None), "n1", &pg(running(false))), Err(ReadFirst::NoLeader));
    }

    #[test]
    fn uninitialized_or_bootstrapping_reads_first() {
        let mut c = cluster(Some("n1"));
        c.initialize = None;
        assert_eq!(decide_on_copy(&c, "n1", &pg(running(false))), Err(ReadFirst::NotInitialized));
        c.initialize = Some(String::new());
        assert_eq!(decide_on_copy(&c, "n1", &pg(running(false))), Err(ReadFirst::NotInitialized));
    }

    #[test]
    fn request_reads_first_but_a_cleared_one_does_not() {
        let mut c = cluster(Some("n1"));
        c.failover = Some(Failover { member: Some("n2".into()), ..Default::default() });
        assert_eq!(decide_on_copy(&c, "n1", &pg(running(false))), Err(ReadFirst::Requested));
        assert_eq!(decide_on_copy(&c, "n2", &pg(running(true))), Err(ReadFirst::Requested));
        // Patroni clears a request by writing `{}`.
        c.failover = Some(Failover::default());
        assert_eq!(decide_on_copy(&c, "n1", &pg(running(false))), Ok(()));
    }

    #[test]
    fn leader_with_postgres_down_reads_first() {
        for process in [PgProcess::Stopped, PgProcess::Starting, PgProcess::Crashed] {
            assert_eq!(
                decide_on_copy(&cluster(Some("n1")), "n1", &pg(process.clone())),
                Err(ReadFirst::LeaderNotRunning),
                "{process:?}"
            );
        }
    }

    #[test]
    fn primary_under_another_leader_reads_first() {
        assert_eq!(
            decide_on_copy(&cluster(Some("n2")), "n1", &pg(running(false))),
            Err(ReadFirst::PrimaryUnderOtherLeader)
        );
    }

    fn lock(name: &str, lease: i64) -> Leader {
        Leader { name: name.into(), lease, mod_revision: 3 }
    }

    #[test]
    fn lock_ours_on_the_lease_kept_alive_this_cycle_needs_no_transaction() {
        assert_eq!(lock_renewal(Some(&lock("n1", 7)), "n1", Some(7)), LockRenewal::ByKeepAlive);
    }

    #[test]
    fn lock_renewal_takes_the_transaction_unless_the_copy_shows_it_ours_on_the_kept_lease() {
        for (copy, kept, why) in [
            (Some(lock("n1", 7)), None, "no keep-alive this cycle"),
            (Some(lock("n1", 6)), Some(7), "the key on another lease (ours expired and came back)"),
            (Some(lock("n2", 7)), Some(7), "another holder"),
            (None, Some(7), "no key, or a copy that cannot tell"),
        ] {
            assert_eq!(lock_renewal(copy.as_ref(), "n1", kept), LockRenewal::ByTransaction, "{why}");
        }
    }
}
