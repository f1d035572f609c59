//! An etcd lease kept alive by its owner's own calls: a node's single lease, shared by its member
//! key and (when leader) the leader key, or a proxy's, under its report (see `proxies`).
//!
//! Invariants:
//! * at most one lease is in use at a time; a new one is granted only when the server says the
//!   old one is gone or the TTL changed, so member and leader keys always end up on the same lease;
//! * refreshing is one keep-alive message, sent by the owner, never by a background task: a node
//!   that stops running its HA loop (a proxy that stops calling) stops refreshing, and its keys
//!   expire after `ttl` as Patroni's do. The keep-alive stream stays open between refreshes only
//!   to save etcd a new stream per refresh; it sends nothing by itself;
//! * grants are serialized, so concurrent callers cannot leave two live leases behind;
//! * a refresh reports when its keep-alive was sent: the lease lasts at least `ttl` from then,
//!   which is what a leader's fencing deadline may count on, and never more.

use std::sync::Mutex;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::{timeout, timeout_at, Instant};

use crate::conn::Conn;
use crate::error::Fault;

#[derive(Debug)]
struct LeaseState {
    /// Lease in use, if any has been granted and not found gone since.
    id: Option<i64>,
    /// TTL for the next grant, in seconds.
    ttl: u64,
    /// The last keep-alive etcd confirmed for the lease in use.
    kept_alive: Option<KeptAlive>,
}

/// A keep-alive etcd confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptAlive {
    /// The lease kept alive (or just granted).
    pub lease: i64,
    /// When the request left: the lease lasts at least its TTL from then.
    pub sent: Instant,
    /// The store revision the answering member had reached when the request arrived; `None`
    /// when the answer did not say (a stream's first answer, a grant).
    pub revision: Option<i64>,
    /// The endpoint that answered (an index into the client's endpoints): a member in touch
    /// with etcd's raft leader, since only such a member can renew a lease.
    pub endpoint: usize,
}

/// An open keep-alive stream for one lease on one endpoint.
struct KeepAliveStream {
    lease: i64,
    endpoint: usize,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

impl std::fmt::Debug for KeepAliveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAliveStream").field("lease", &self.lease).field("endpoint", &self.endpoint).finish()
    }
}

/// What one keep-alive on an open stream came to.
enum StreamAnswer {
    Alive(Option<i64>),
    /// etcd answered with TTL 0: the lease is gone.
    Gone,
    /// No answer in time, or the stream broke.
    Failed,
}

/// The lease and its TTL, safe to share between tasks.
#[derive(Debug)]
pub(crate) struct LeaseSlot {
    state: Mutex<LeaseState>,
    /// Held while refreshing or granting; holds the open keep-alive stream, if any.
    serial: tokio::sync::Mutex<Option<KeepAliveStream>>,
}

impl LeaseSlot {
    pub(crate) fn new(ttl: u64) -> Self {
        LeaseSlot {
            state: Mutex::new(LeaseState { id: None, ttl, kept_alive: None }),
            serial: tokio::sync::Mutex::new(None),
        }
    }

    /// The last keep-alive etcd confirmed for the lease in use.
    pub(crate) fn kept_alive(&self) -> Option<KeptAlive> {
        let state = self.lock();
        state.kept_alive.filter(|k| Some(k.lease) == state.id)
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
            state.kept_alive = None;
        }
    }

    /// Drops `id` after the server reported it missing (unless it was already replaced).
    pub(crate) fn forget(&self, id: i64) {
        let mut state = self.lock();
        if state.id == Some(id) {
            state.id = None;
            state.kept_alive = None;
        }
    }

    /// One keep-alive round trip for the current lease, or a grant if there is none or it is gone.
    pub(crate) async fn refresh(&self, conn: &Conn, deadline: Instant) -> Result<KeptAlive, Fault> {
        let mut open = timeout_at(deadline, self.serial.lock()).await.map_err(|_| Fault::Timeout)?;
        if let Some(id) = self.current() {
            let sent = Instant::now();
            // The open stream first, if it is for this lease on the endpoint every other request
            // goes to; otherwise (or if it fails) a new one, through the retry loop.
            if let Some(stream) = open.take().filter(|s| s.lease == id && s.endpoint == conn.preferred()) {
                let endpoint = stream.endpoint;
                match Self::keep_alive_on(stream, conn.first_attempt_budget(deadline)).await {
                    (StreamAnswer::Alive(revision), stream) => {
                        *open = stream;
                        return Ok(self.record(KeptAlive { lease: id, sent, revision, endpoint }));
                    }
                    (StreamAnswer::Gone, _) => {
                        tracing::info!(lease = id, "etcd lease expired; granting a new one");
                        self.forget(id);
                    }
                    (StreamAnswer::Failed, _) => conn.demote(endpoint),
                }
            }
            if self.current() == Some(id) {
                let sent = Instant::now();
                match conn.call_on(deadline, |mut c| async move { c.lease_keep_alive(id).await }).await {
                    Ok(((keeper, answers), endpoint)) => {
                        *open = Some(KeepAliveStream { lease: id, endpoint, keeper, answers });
                        return Ok(self.record(KeptAlive { lease: id, sent, revision: None, endpoint }));
                    }
                    Err(Fault::LeaseNotFound) => {
                        tracing::info!(lease = id, "etcd lease expired; granting a new one");
                        self.forget(id);
                    }
                    Err(fault) => return Err(fault),
                }
            }
        }
        self.grant(conn, deadline).await
    }

    /// The lease in use, or a new one if there is none; no keep-alive. For writes whose keys
    /// may outlive a missed keep-alive by less than the TTL (a member key), not for the lock.
    pub(crate) async fn current_or_grant(&self, conn: &Conn, deadline: Instant) -> Result<i64, Fault> {
        if let Some(id) = self.current() {
            return Ok(id);
        }
        let _open = timeout_at(deadline, self.serial.lock()).await.map_err(|_| Fault::Timeout)?;
        match self.current() {
            Some(id) => Ok(id),
            None => self.grant(conn, deadline).await.map(|k| k.lease),
        }
    }

    /// One keep-alive on an open stream; gives the stream back if it is still usable.
    async fn keep_alive_on(
        mut stream: KeepAliveStream,
        budget: std::time::Duration,
    ) -> (StreamAnswer, Option<KeepAliveStream>) {
        let exchange = async {
            stream.keeper.keep_alive().await.ok()?;
            stream.answers.message().await.ok().flatten()
        };
        match timeout(budget, exchange).await {
            Ok(Some(answer)) if answer.ttl() > 0 => {
                let revision = answer.header().map(|h| h.revision());
                (StreamAnswer::Alive(revision), Some(stream))
            }
            Ok(Some(_)) => (StreamAnswer::Gone, None),
            // A stream that timed out may still deliver that answer later, out of step with the
            // next request: it is dropped, never reused.
            Ok(None) | Err(_) => (StreamAnswer::Failed, None),
        }
    }

    fn record(&self, kept: KeptAlive) -> KeptAlive {
        let mut state = self.lock();
        if state.id == Some(kept.lease) {
            state.kept_alive = Some(kept);
        }
        kept
    }

    /// Revokes the lease in use, which deletes every key attached to it at once (a clean stop).
    /// A lease already gone counts as revoked.
    pub(crate) async fn revoke(&self, conn: &Conn, deadline: Instant) -> Result<(), Fault> {
        let mut open = timeout_at(deadline, self.serial.lock()).await.map_err(|_| Fault::Timeout)?;
        *open = None;
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
    async fn grant(&self, conn: &Conn, deadline: Instant) -> Result<KeptAlive, Fault> {
        let wanted = self.lock().ttl;
        let ttl = i64::try_from(wanted).unwrap_or(i64::MAX);
        let sent = Instant::now();
        let (granted, endpoint) = conn.call_on(deadline, |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        let id = granted.id();
        let mut state = self.lock();
        // If the TTL changed meanwhile, use this lease for this call only; the next refresh
        // grants one with the new TTL.
        let kept = KeptAlive { lease: id, sent, revision: None, endpoint };
        if state.ttl == wanted {
            state.id = Some(id);
            state.kept_alive = Some(kept);
        }
        drop(state);
        tracing::debug!(lease = id, ttl, "granted etcd lease");
        Ok(kept)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        // The state is two plain fields; a panic elsewhere cannot leave them half-written.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
