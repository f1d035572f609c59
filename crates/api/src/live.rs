//! WAL positions read when a status request arrives (`GET /patroni` and the health checks), as
//! Patroni queries PostgreSQL for each one. During a leader race every member asks the others
//! for their positions, and the last published snapshot can be a `loop_wait` old: a replica
//! that received the old primary's last WAL a moment ago would look behind, and a member with a
//! lower `failover_priority` could win against it.
//!
//! Invariant: the HA loop is never waited for (the agent answers on a connection of its own,
//! within [`LIVE_LIMIT`]); without an answer, or when the server's role changed since the
//! snapshot, the snapshot's positions stand. Positions only move forward.

use std::time::Duration;

use crate::backend::BoxFuture;
use crate::snapshot::NodeSnapshot;
use rampart_core::PgState;

/// How long a status request waits for the live positions before using the snapshot's.
pub const LIVE_LIMIT: Duration = Duration::from_millis(500);

/// WAL positions as PostgreSQL reports them now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalNow {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Primary: `pg_current_wal_flush_lsn()`.
    pub flush: Option<u64>,
    /// Replica: `pg_last_wal_receive_lsn()`.
    pub received: Option<u64>,
    /// Replica: `pg_last_wal_replay_lsn()`.
    pub replayed: Option<u64>,
}

/// The agent's side: reads [`WalNow`] from its own server.
pub trait LiveWal: Send + Sync {
    /// The positions now, or `None` if PostgreSQL did not answer.
    fn wal_now(&self) -> BoxFuture<'_, Option<WalNow>>;
}

/// Puts fresher positions into `snap` (same role only; never backwards).
pub fn overlay(snap: &mut NodeSnapshot, now: WalNow) {
    if now.in_recovery != snap.in_recovery {
        return;
    }
    let forward = |old: &mut u64, new: Option<u64>| *old = (*old).max(new.unwrap_or(0));
    if now.in_recovery {
        forward(&mut snap.xlog_received, now.received);
        forward(&mut snap.xlog_replayed, now.replayed);
    } else {
        forward(&mut snap.xlog_flush, now.flush);
    }
}

/// `snap` with the live positions when PostgreSQL runs and answers in time.
pub async fn refreshed(mut snap: NodeSnapshot, alive: bool, live: Option<&dyn LiveWal>) -> NodeSnapshot {
    let Some(live) = live.filter(|_| alive && snap.state == PgState::Running) else { return snap };
    if let Ok(Some(now)) = tokio::time::timeout(LIVE_LIMIT, live.wal_now()).await {
        overlay(&mut snap, now);
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Option<WalNow>, Duration);

    impl LiveWal for Fixed {
        fn wal_now(&self) -> BoxFuture<'_, Option<WalNow>> {
            Box::pin(async move {
                tokio::time::sleep(self.1).await;
                self.0
            })
        }
    }

    fn replica() -> NodeSnapshot {
        NodeSnapshot {
            state: "running".into(),
            in_recovery: true,
            xlog_received: 100,
            xlog_replayed: 90,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_replica_shows_what_it_received_since_the_snapshot() {
        let now = WalNow { in_recovery: true, received: Some(160), replayed: Some(150), flush: None };
        let s = refreshed(replica(), true, Some(&Fixed(Some(now), Duration::ZERO))).await;
        assert_eq!((s.xlog_received, s.xlog_replayed), (160, 150));
    }

    #[tokio::test]
    async fn the_snapshot_stands_without_a_timely_answer_after_a_role_change_or_when_stopped() {
        let fresh = WalNow { in_recovery: true, received: Some(160), replayed: Some(150), flush: None };
        let slow = Fixed(Some(fresh), LIVE_LIMIT * 4);
        assert_eq!(refreshed(replica(), true, Some(&slow)).await.xlog_received, 100, "too slow");
        let promoted = WalNow { in_recovery: false, flush: Some(500), ..Default::default() };
        let s = refreshed(replica(), true, Some(&Fixed(Some(promoted), Duration::ZERO))).await;
        assert_eq!((s.xlog_flush, s.xlog_received), (0, 100), "role changed since the snapshot");
        assert_eq!(refreshed(replica(), false, Some(&Fixed(Some(fresh), Duration::ZERO))).await.xlog_received, 100);
        let stopped = NodeSnapshot { state: "stopped".into(), ..replica() };
        assert_eq!(refreshed(stopped, true, Some(&Fixed(Some(fresh), Duration::ZERO))).await.xlog_received, 100);
        let behind = WalNow { in_recovery: true, received: Some(50), replayed: Some(40), flush: None };
        let s = refreshed(replica(), true, Some(&Fixed(Some(behind), Duration::ZERO))).await;
        assert_eq!((s.xlog_received, s.xlog_replayed), (100, 90), "never backwards");
    }
}
