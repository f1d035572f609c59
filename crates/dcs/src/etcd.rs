//! `EtcdDcs`: the [`Dcs`] trait on etcd v3, with Patroni's key layout and value formats.
//!
//! Invariants:
//! * every key written lives under this cluster's prefix, and the values are what Patroni
//!   writes (plain strings for `leader` and `initialize`, compact JSON for the rest);
//! * writes that attach the lease recover from an expired lease by granting a new one and
//!   writing again, so a pause longer than `ttl` never wedges the node;
//! * the cluster is read in one range request, so a snapshot never mixes two revisions.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp};
use rampart_core::cached_view::{lock_renewal, LockRenewal};
use rampart_core::failsafe::Topology;
use rampart_core::keys::{self, ClusterPrefix};
use rampart_core::model::{Failover, HistoryEntry, Leader, RawKv, Status, SyncState};
use rampart_core::{Cluster, MemberData};
use tokio::time::Instant;

use crate::conn::Conn;
use crate::dcs::{Dcs, DcsResult};
use crate::error::{DcsError, Fault};
use crate::leader;
use crate::lease::{KeptAlive, LeaseSlot};
use crate::options::EtcdOptions;
use crate::view::ClusterView;

/// The longest a cycle decides on the watch-fed copy without a full read in between: however
/// well the watch seems to work, the copy is re-read from scratch at least this often.
const FULL_READ_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// A member's handle on one cluster in etcd. Cheap to clone; clones share the connection and
/// the lease.
#[derive(Clone)]
pub struct EtcdDcs {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conn: Conn,
    pub(crate) prefix: ClusterPrefix,
    member: String,
    lease: LeaseSlot,
    /// The copy of the cluster's keys the watcher feeds (unused without a watcher).
    pub(crate) view: ClusterView,
}

impl std::fmt::Debug for EtcdDcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDcs")
            .field("endpoints", &self.inner.conn.endpoints())
            .field("prefix", &self.inner.prefix.as_str())
            .field("member", &self.inner.member)
            .field("lease", &self.inner.lease.current())
            .finish()
    }
}

impl EtcdDcs {
    /// Prepares the client. Nothing is sent to etcd yet: an unreachable etcd shows up as an error
    /// of the first operation (and of every one until it is back), so the agent can start and
    /// keep retrying. Fails only on unusable settings.
    pub async fn connect(
        options: EtcdOptions,
        prefix: ClusterPrefix,
        member_name: String,
        ttl_secs: u64,
    ) -> Result<EtcdDcs, DcsError> {
        if member_name.is_empty() || member_name.contains('/') {
            return Err(options.config_error(format!("invalid member name {member_name:?}")));
        }
        let conn = Conn::new(&options).await?;
        Ok(EtcdDcs {
            inner: Arc::new(Inner {
                conn,
                prefix,
                member: member_name,
                lease: LeaseSlot::new(ttl_secs),
                view: ClusterView::default(),
            }),
        })
    }

    /// The cluster prefix this handle works under.
    pub fn prefix(&self) -> &ClusterPrefix {
        &self.inner.prefix
    }

    /// The lease currently in use, if one has been granted.
    pub fn lease_id(&self) -> Option<i64> {
        self.inner.lease.current()
    }

    fn key(&self, name: &str) -> String {
        self.inner.prefix.key(name)
    }

    fn member_key(&self) -> String {
        self.inner.prefix.member(&self.inner.member)
    }

    /// Plain put, no lease.
    async fn put(&self, op: &'static str, key: String, value: String, deadline: Instant) -> DcsResult<()> {
        self.inner
            .conn
            .run(op, deadline, |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, None).await }
            })
            .await
            .map(|resp| self.answered(resp.header()))
    }

    async fn delete(
        &self,
        op: &'static str,
        key: String,
        options: Option<DeleteOptions>,
        deadline: Instant,
    ) -> DcsResult<()> {
        self.inner
            .conn
            .run(op, deadline, |mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.delete(key, options).await }
            })
            .await
            .map(|resp| self.answered(resp.header()))
    }

    /// etcd answered a write or a compare of ours at the revision in `header`: the watch-fed
    /// copy must show that revision before a cycle decides on it (read-your-writes, see
    /// [`crate::view`]).
    fn answered(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(h) = header {
            self.inner.view.wrote(h.revision());
        }
    }

    /// Runs a transaction and returns whether its compare succeeded.
    async fn txn_succeeded(&self, op: &'static str, txn: Txn, deadline: Instant) -> DcsResult<bool> {
        self.inner
            .conn
            .run(op, deadline, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map(|resp| {
                self.answered(resp.header());
                resp.succeeded()
            })
    }

    /// Refreshes `slot`'s lease (one keep-alive, or a grant), then runs `write` with it. If etcd
    /// says the lease is gone by then (it expired between the two), grants a new one and runs
    /// `write` once more.
    pub(crate) async fn with_lease_of<T, F, Fut>(
        &self,
        slot: &LeaseSlot,
        op: &'static str,
        deadline: Instant,
        write: F,
    ) -> DcsResult<T>
    where
        F: FnMut(i64) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, Fault>> + Send,
        T: Send,
    {
        self.on_lease(slot, true, op, deadline, write).await
    }

    /// Runs `write` with `slot`'s lease: refreshed first if `refresh`, else the lease in use as
    /// it is (granted if there is none). A lease etcd says is gone is replaced and `write` run
    /// once more.
    async fn on_lease<T, F, Fut>(
        &self,
        slot: &LeaseSlot,
        refresh: bool,
        op: &'static str,
        deadline: Instant,
        mut write: F,
    ) -> DcsResult<T>
    where
        F: FnMut(i64) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, Fault>> + Send,
        T: Send,
    {
        let started = Instant::now();
        let conn = &self.inner.conn;
        let lease_now = || async move {
            match refresh {
                true => slot.refresh(conn, deadline).await.map(|k| k.lease),
                false => slot.current_or_grant(conn, deadline).await,
            }
        };
        let mut lease = lease_now().await.map_err(|f| conn.error(op, f, started))?;
        let mut regranted = false;
        loop {
            match write(lease).await {
                Err(Fault::LeaseNotFound) if !regranted => {
                    tracing::info!(lease, op, "etcd lease gone; granting a new one");
                    slot.forget(lease);
                    lease = lease_now().await.map_err(|f| conn.error(op, f, started))?;
                    regranted = true;
                }
                other => return other.map_err(|f| conn.error(op, f, started)),
            }
        }
    }

    /// Puts `value` at `key` on `lease`: what every leased write does once it has its lease.
    pub(crate) async fn put_on_lease(
        &self,
        key: &str,
        value: &str,
        lease: i64,
        deadline: Instant,
    ) -> Result<(), Fault> {
        self.inner
            .conn
            .call(deadline, |mut c| {
                let (key, value) = (key.to_string(), value.to_string());
                async move { c.put(key, value, Some(PutOptions::new().with_lease(lease))).await }
            })
            .await
            .map(|resp| self.answered(resp.header()))
    }

    /// Refreshes the lease, then runs the leader transaction (see [`leader::hold`]).
    async fn hold_leader(&self, op: &'static str, deadline: Instant) -> DcsResult<bool> {
        let key = self.key(keys::LEADER);
        self.hold_key(&self.inner.lease, op, &key, &self.inner.member, deadline).await
    }

    /// Refreshes `slot`'s lease, then runs the lock transaction of [`leader::hold`] on `key` for
    /// `name`: whether the key is now `name`'s, on that lease.
    pub(crate) async fn hold_key(
        &self,
        slot: &LeaseSlot,
        op: &'static str,
        key: &str,
        name: &str,
        deadline: Instant,
    ) -> DcsResult<bool> {
        let conn = &self.inner.conn;
        self.with_lease_of(slot, op, deadline, |lease| {
            let txn = leader::hold(key, name, lease);
            async move {
                let resp = conn
                    .call(deadline, |mut c| {
                        let txn = txn.clone();
                        async move { c.txn(txn).await }
                    })
                    .await?;
                self.answered(resp.header());
                Ok(leader::held(&resp))
            }
        })
        .await
    }
}

impl EtcdDcs {
    /// One linearizable range read of the whole cluster prefix: its keys and the store revision.
    pub(crate) async fn read_keys(&self, op: &'static str, deadline: Instant) -> DcsResult<(Vec<RawKv>, i64)> {
        let prefix = self.inner.prefix.as_str().to_string();
        // A range read without `serializable` is linearizable: it reflects every write that
        // completed before it started, on whichever member answers.
        let resp = self
            .inner
            .conn
            .run(op, deadline, |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(raw_kv).collect(), revision))
    }
}

/// Converts etcd's key-values to the core's raw form; non-UTF-8 bytes are replaced, which makes
/// such a value fail to parse and be reported rather than abort the read.
fn raw_kv(kv: &KeyValue) -> RawKv {
    RawKv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        lease: kv.lease(),
        mod_revision: kv.mod_revision(),
    }
}

/// "The key is still at `revision`", where revision 0 means "the key does not exist" (etcd
/// reports a missing key's revisions as 0, so one comparison covers both).
fn expected_revision_is(key: &str, revision: i64) -> Compare {
    if revision == 0 {
        Compare::create_revision(key, CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key, CompareOp::Equal, revision)
    }
}

/// Compact JSON, as Patroni's `json.dumps(..., separators=(',', ':'))`.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Our model types are maps, lists, strings and numbers: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string())
}

impl Dcs for EtcdDcs {
    fn member_name(&self) -> &str {
        &self.inner.member
    }

    fn op_deadline(&self) -> Instant {
        Instant::now() + self.inner.conn.op_timeout()
    }

    async fn read_cluster(&self, deadline: Instant) -> DcsResult<Cluster> {
        let (kvs, revision) = self.read_keys("read_cluster", deadline).await?;
        // Every full read is also a resync of the watch-fed copy.
        self.inner.view.reseed(&kvs, revision, false);
        Ok(Cluster::from_kvs(&self.inner.prefix, &kvs, revision))
    }

    async fn refresh_lease(&self, deadline: Instant) -> DcsResult<KeptAlive> {
        let started = Instant::now();
        let inner = &self.inner;
        inner.lease.refresh(&inner.conn, deadline).await.map_err(|f| inner.conn.error("refresh_lease", f, started))
    }

    async fn cached_cluster(&self, kept: &KeptAlive, wait: std::time::Duration) -> Option<Cluster> {
        self.inner.view.current(&self.inner.prefix, kept, FULL_READ_AT_LEAST_EVERY, wait).await
    }

    fn set_ttl(&self, secs: u64) {
        self.inner.lease.set_ttl(secs);
    }

    async fn touch_member(&self, data: &MemberData, deadline: Instant) -> DcsResult<()> {
        let (key, value) = (self.member_key(), to_json(data));
        // Written only when it changes (as Patroni does): the watch-fed copy shows what the key
        // holds, and on which lease. A copy that cannot tell means a write.
        if self.inner.lease.current().is_some_and(|lease| self.inner.view.shows(&key, &value, lease)) {
            return Ok(());
        }
        let (key, value) = (&key, &value);
        // The lease as it is: this cycle's keep-alive refreshed it, and a key on a lease that
        // expired meanwhile is written again on a new one.
        self.on_lease(&self.inner.lease, false, "touch_member", deadline, |lease| {
            self.put_on_lease(key, value, lease, deadline)
        })
        .await
    }

    async fn delete_member(&self, deadline: Instant) -> DcsResult<()> {
        self.delete("delete_member", self.member_key(), None, deadline).await
    }

    async fn try_initialize(&self, value: &str, deadline: Instant) -> DcsResult<bool> {
        let key = self.key(keys::INITIALIZE);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        self.txn_succeeded("try_initialize", txn, deadline).await
    }

    async fn set_initialize(&self, sysid: &str, deadline: Instant) -> DcsResult<()> {
        self.put("set_initialize", self.key(keys::INITIALIZE), sysid.to_string(), deadline).await
    }

    async fn cancel_initialize(&self, deadline: Instant) -> DcsResult<()> {
        self.delete("cancel_initialize", self.key(keys::INITIALIZE), None, deadline).await
    }

    async fn acquire_leader(&self, deadline: Instant) -> DcsResult<bool> {
        self.hold_leader("acquire_leader", deadline).await
    }

    async fn renew_leader(&self, deadline: Instant) -> DcsResult<Option<Instant>> {
        // The steady case costs no transaction (the core's rule, `lock_renewal`): then the lock
        // lasts a ttl from when this cycle's keep-alive was sent.
        let this_cycle = self.inner.lease.kept_alive().filter(|k| k.sent.elapsed() < self.inner.conn.op_timeout());
        let copy_lock = self.inner.view.entry(&self.key(keys::LEADER)).ok().flatten().map(|kv| Leader::from_kv(&kv));
        let renewal = lock_renewal(copy_lock.as_ref(), &self.inner.member, this_cycle.as_ref().map(|k| k.lease));
        if let (LockRenewal::ByKeepAlive, Some(kept)) = (renewal, this_cycle) {
            return Ok(Some(kept.sent));
        }
        // The transaction refreshes the lease after `sent`: the lock lasts a ttl from `sent`.
        let sent = Instant::now();
        Ok(self.hold_leader("renew_leader", deadline).await?.then_some(sent))
    }

    async fn release_leader(&self, deadline: Instant) -> DcsResult<bool> {
        let txn = leader::release(&self.key(keys::LEADER), &self.inner.member);
        self.txn_succeeded("release_leader", txn, deadline).await
    }

    async fn write_status(&self, status: &Status, deadline: Instant) -> DcsResult<()> {
        self.put("write_status", self.key(keys::STATUS), to_json(status), deadline).await
    }

    async fn write_failsafe(&self, topology: &Topology, deadline: Instant) -> DcsResult<()> {
        // Compact JSON, as Patroni writes it.
        self.put("write_failsafe", self.key(keys::FAILSAFE), to_json(topology), deadline).await
    }

    async fn write_history(&self, history: &[HistoryEntry], deadline: Instant) -> DcsResult<()> {
        let lines: Vec<serde_json::Value> = history.iter().map(HistoryEntry::to_json).collect();
        self.put("write_history", self.key(keys::HISTORY), to_json(&lines), deadline).await
    }

    async fn write_backup(&self, report: &rampart_core::backup::BackupReport, deadline: Instant) -> DcsResult<()> {
        self.put("write_backup", self.key(keys::BACKUP), to_json(report), deadline).await
    }

    async fn set_config_if_absent(&self, json: &str, deadline: Instant) -> DcsResult<bool> {
        let key = self.key(keys::CONFIG);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, json, None)]);
        self.txn_succeeded("set_config_if_absent", txn, deadline).await
    }

    async fn set_config(&self, json: &str, expected_mod_revision: Option<i64>, deadline: Instant) -> DcsResult<bool> {
        let key = self.key(keys::CONFIG);
        match expected_mod_revision {
            Some(revision) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
                    .and_then([TxnOp::put(key, json, None)]);
                self.txn_succeeded("set_config", txn, deadline).await
            }
            None => self.put("set_config", key, json.to_string(), deadline).await.map(|()| true),
        }
    }

    async fn set_failover(&self, failover: &Failover, deadline: Instant) -> DcsResult<()> {
        self.put("set_failover", self.key(keys::FAILOVER), to_json(failover), deadline).await
    }

    async fn clear_failover(&self, deadline: Instant) -> DcsResult<()> {
        self.put("clear_failover", self.key(keys::FAILOVER), "{}".to_string(), deadline).await
    }

    async fn write_sync(&self, state: &SyncState, expected_revision: i64, deadline: Instant) -> DcsResult<bool> {
        let key = self.key(keys::SYNC);
        let txn = Txn::new().when([expected_revision_is(&key, expected_revision)]).and_then([TxnOp::put(
            key,
            to_json(state),
            None,
        )]);
        self.txn_succeeded("write_sync", txn, deadline).await
    }

    async fn delete_sync(&self, expected_revision: i64, deadline: Instant) -> DcsResult<bool> {
        let key = self.key(keys::SYNC);
        let txn = Txn::new().when([expected_revision_is(&key, expected_revision)]).and_then([TxnOp::delete(key, None)]);
        self.txn_succeeded("delete_sync", txn, deadline).await
    }

    async fn delete_cluster(&self, deadline: Instant) -> DcsResult<()> {
        let prefix = self.inner.prefix.as_str().to_string();
        self.delete("delete_cluster", prefix, Some(DeleteOptions::new().with_prefix()), deadline).await
    }
}
