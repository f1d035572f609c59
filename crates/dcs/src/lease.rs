//! An etcd lease kept alive by its owner's own calls: a node's single lease, shared by its member
//! key and (when leader) the leader key, or a proxy's, under its report (see `proxies`).
//!
//! Invariants:
//! * at most one lease is in use at a time; a new one is granted only when the server says the
//!   old one is gone or the TTL changed, so member and leader keys always end up on the same lease;
//! * refreshing is one keep-alive round trip, not a background stream: a node that stops running
//!   its HA loop (a proxy that stops calling) stops refreshing, and its keys expire after `ttl` as
//!   Patroni's do;
//! * grants are serialized, so concurrent callers cannot leave two live leases behind.

use std::sync::Mutex;

use tokio::time::{timeout_at, Instant};

use crate::conn::Conn;
use crate::error::Fault;

#[derive(Debug)]
struct LeaseState {
    /// Lease in use, if any has been granted and not found gone since.
    id: Option<i64>,
    /// TTL for the next grant, in seconds.
    ttl: u64,
}

/// The lease and its TTL, safe to share between tasks.
#[derive(Debug)]
pub(crate) struct LeaseSlot {
    state: Mutex<LeaseState>,
    /// Held while refreshing or granting.
    serial: tokio::sync::Mutex<()>,
}

impl LeaseSlot {
    pub(crate) fn new(ttl: u64) -> Self {
        LeaseSlot { state: Mutex::new(LeaseState { id: None, ttl }), serial: tokio::sync::Mutex::new(()) }
    }

    /// The lease in use, if any.
    pub(crate) fn current(&self) -> Option<i64> {
        self.lock().id
    }

    /// Switches to a new TTL. The old lease is not revoked (that would delete the leader key at
    /// once); it is simply no longer refreshed, and the keys move to the new lease on next write.
    pub(crate) fn set_ttl(&self, ttl: u64) {
        let mut state = self.lock();
        if state.ttl != ttl {
            state.ttl = ttl;
            state.id = None;
        }
    }

    /// Drops `id` after the server reported it missing (unless it was already replaced).
    pub(crate) fn forget(&self, id: i64) {
        let mut state = self.lock();
        if state.id == Some(id) {
            state.id = None;
        }
    }

    /// One keep-alive round trip for the current lease, or a grant if there is none or it is gone.
    pub(crate) async fn refresh(&self, conn: &Conn, deadline: Instant) -> Result<i64, Fault> {
        let _serial = timeout_at(deadline, self.serial.lock()).await.map_err(|_| Fault::Timeout)?;
        if let Some(id) = self.current() {
            // `lease_keep_alive` sends one request and waits for its answer; dropping the
            // returned keeper and stream closes the stream again.
            match conn.call(deadline, |mut c| async move { c.lease_keep_alive(id).await.map(|_| ()) }).await {
                Ok(()) => return Ok(id),
                Err(Fault::LeaseNotFound) => {
                    tracing::info!(lease = id, "etcd lease expired; granting a new one");
                    self.forget(id);
                }
                Err(fault) => return Err(fault),
            }
        }
        self.grant(conn, deadline).await
    }

    /// Revokes the lease in use, which deletes every key attached to it at once (a clean stop).
    /// A lease already gone counts as revoked.
    pub(crate) async fn revoke(&self, conn: &Conn, deadline: Instant) -> Result<(), Fault> {
        let _serial = timeout_at(deadline, self.serial.lock()).await.map_err(|_| Fault::Timeout)?;
        let Some(id) = self.current() else { return Ok(()) };
        match conn.call(deadline, |mut c| async move { c.lease_revoke(id).await.map(drop) }).await {
            Ok(()) | Err(Fault::LeaseNotFound) => {
                self.forget(id);
                Ok(())
            }
            Err(fault) => Err(fault),
        }
    }

    /// Grants a lease with the configured TTL; the caller holds `serial`.
    async fn grant(&self, conn: &Conn, deadline: Instant) -> Result<i64, Fault> {
        let wanted = self.lock().ttl;
        let ttl = i64::try_from(wanted).unwrap_or(i64::MAX);
        let granted = conn.call(deadline, |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        let id = granted.id();
        let mut state = self.lock();
        // If the TTL changed meanwhile, use this lease for this call only; the next refresh
        // grants one with the new TTL.
        if state.ttl == wanted {
            state.id = Some(id);
        }
        drop(state);
        tracing::debug!(lease = id, ttl, "granted etcd lease");
        Ok(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        // The state is two plain fields; a panic elsewhere cannot leave them half-written.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
