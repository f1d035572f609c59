//! A `rampart proxy`'s registration: its report under `<prefix>proxies/<id>`, on an etcd lease of
//! its own, which the leader reads before it stops PostgreSQL for a switchover (the protocol and
//! the rule: [`rampart_core::drain`]).
//!
//! Invariants:
//! * the key lives exactly as long as the proxy keeps its lease alive: a proxy that dies or hangs
//!   stops refreshing, its key expires after the TTL, and no leader waits for it after that;
//! * a report is written only when it differs from the last one written on the lease in force:
//!   etcd is shared by many clusters, so a proxy costs one keep-alive every few seconds and two
//!   writes per switchover (less than a Patroni member's put and keep-alive every `loop_wait`);
//! * a lease found gone (the proxy was paused past its TTL) is replaced, and the report written
//!   again on the new one, by whichever call notices it first;
//! * the lease is the proxy's own, never the member lease of an agent in the same process.

use std::sync::Mutex;

use rampart_core::ProxyReport;
use tokio::time::Instant;

use crate::dcs::DcsResult;
use crate::etcd::{to_json, EtcdDcs};
use crate::lease::LeaseSlot;

/// A proxy's registration in one cluster: its key, its lease, and the report last written.
/// Obtained from [`EtcdDcs::register_proxy`]; ended by [`ProxyRegistration::unregister`] (or by
/// no longer calling [`ProxyRegistration::keep_alive`], after the TTL).
pub struct ProxyRegistration {
    dcs: EtcdDcs,
    id: String,
    key: String,
    lease: LeaseSlot,
    /// The report last written and the lease it was written on.
    written: Mutex<Option<(ProxyReport, i64)>>,
}

impl std::fmt::Debug for ProxyRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRegistration")
            .field("key", &self.key)
            .field("lease", &self.lease.current())
            .field("written", &self.written())
            .finish()
    }
}

impl EtcdDcs {
    /// Registers the proxy `id` (unique per running proxy, e.g. `host-pid`; no `/`): grants it a
    /// lease of `ttl` seconds and writes `report` to `<prefix>proxies/<id>` on it. Keep it alive
    /// with [`ProxyRegistration::keep_alive`] well within `ttl` (every `ttl / 3`, say).
    pub async fn register_proxy(
        &self,
        id: &str,
        report: &ProxyReport,
        ttl: u64,
        deadline: Instant,
    ) -> DcsResult<ProxyRegistration> {
        if id.is_empty() || id.contains('/') {
            return Err(crate::DcsError::Config {
                endpoints: self.inner.conn.endpoints().to_string(),
                detail: format!("invalid proxy id {id:?}: it must be non-empty and contain no '/'"),
            });
        }
        let registration = ProxyRegistration {
            dcs: self.clone(),
            id: id.to_string(),
            key: self.inner.prefix.proxy(id),
            lease: LeaseSlot::new(ttl),
            written: Mutex::new(None),
        };
        registration.write("register_proxy", report, deadline).await?;
        Ok(registration)
    }
}

impl ProxyRegistration {
    /// The proxy's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its full key, `<prefix>proxies/<id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease in use.
    pub fn lease_id(&self) -> Option<i64> {
        self.lease.current()
    }

    /// One keep-alive round trip for the proxy's lease. If the lease had expired meanwhile, a new
    /// one is granted and the last report written again on it (the key went with the old lease).
    pub async fn keep_alive(&self, deadline: Instant) -> DcsResult<()> {
        let started = Instant::now();
        let conn = &self.dcs.inner.conn;
        let lease =
            self.lease.refresh(conn, deadline).await.map_err(|f| conn.error("keep_proxy_alive", f, started))?.lease;
        match self.written() {
            Some((report, on)) if on != lease => self.write("keep_proxy_alive", &report, deadline).await,
            _ => Ok(()),
        }
    }

    /// Publishes `report` unless it is what the key already holds on the lease in force. True
    /// if it was written. Meant to be called with the current report
    /// ([`rampart_core::drain::report`]) on every cycle of the proxy: it costs nothing while the
    /// report is unchanged, and a report overtaken by a concurrent [`Self::keep_alive`] rewrite
    /// is put right on the next call.
    pub async fn update(&self, report: &ProxyReport, deadline: Instant) -> DcsResult<bool> {
        let unchanged = self.written().is_some_and(|(r, on)| &r == report && Some(on) == self.lease.current());
        if unchanged {
            return Ok(false);
        }
        self.write("update_proxy_report", report, deadline).await.map(|()| true)
    }

    /// Revokes the lease, which deletes the key at once: for a clean stop, so that no leader
    /// waits for a proxy that is gone.
    pub async fn unregister(self, deadline: Instant) -> DcsResult<()> {
        let started = Instant::now();
        let conn = &self.dcs.inner.conn;
        self.lease.revoke(conn, deadline).await.map_err(|f| conn.error("unregister_proxy", f, started))
    }

    async fn write(&self, op: &'static str, report: &ProxyReport, deadline: Instant) -> DcsResult<()> {
        let (key, value) = (self.key.as_str(), to_json(report));
        let value = value.as_str();
        let lease = self
            .dcs
            .with_lease_of(&self.lease, op, deadline, |lease| async move {
                self.dcs.put_on_lease(key, value, lease, deadline).await.map(|()| lease)
            })
            .await?;
        *self.lock() = Some((report.clone(), lease));
        Ok(())
    }

    fn written(&self) -> Option<(ProxyReport, i64)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(ProxyReport, i64)>> {
        // A plain value replaced whole; a panic elsewhere cannot leave it half-written.
        self.written.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
