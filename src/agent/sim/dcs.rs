//! The in-memory DCS: one store shared by every member, with leases expiring in virtual time
//! and the compare-and-swap semantics [`rampart_dcs::Dcs`] documents (the leader key written
//! only if free or ours, `sync` only at the expected revision, `initialize` only if absent).
//!
//! A member cut off from the DCS gets no answer: its call waits until its deadline and fails
//! with a timeout (or goes through if the cut ends first), as a partitioned etcd client does;
//! a frozen agent's call waits for the freeze to end.
//!
//! The watch-fed copy a cycle may decide on lags behind the store by up to the machine's
//! `watch_lag`, as a watch whose events are still on their way does: the adapter's test of
//! currency (the stream on the member that answered the keep-alive) cannot see such a delay.
//! Like the adapter's, the copy is never used before it shows the member's own last write.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rampart_core::cached_view::{lock_renewal, LockRenewal};
use rampart_core::failsafe::Topology;
use rampart_core::keys;
use rampart_core::model::{Failover, HistoryEntry, Status, SyncState};
use rampart_core::{Cluster, MemberData};
use rampart_dcs::{Dcs, DcsError, DcsResult, KeptAlive};
use tokio::time::Instant;

use super::world::{name, World};
use super::SharedWorld;

/// How long a call may take, and how old a keep-alive may be to count as this cycle's.
const OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// One member's handle on the shared store.
#[derive(Clone)]
pub struct MemDcs {
    world: SharedWorld,
    me: usize,
    name: String,
    lease: Arc<AtomicI64>,
    ttl: Arc<AtomicU64>,
    /// The watch-fed copy and when (virtual ms) it last caught up with the store.
    copy: Arc<Mutex<Option<(u64, Cluster)>>>,
    /// The last keep-alive that went through: when it was sent and the lease it renewed.
    kept: Arc<Mutex<Option<(Instant, i64)>>>,
    /// The store's revision after this member's last write or compare: as the etcd adapter's
    /// copy, this member's copy is not current before it shows that revision.
    written: Arc<AtomicI64>,
}

impl MemDcs {
    /// Member `me`'s handle, with leases of `ttl` seconds.
    pub fn new(world: SharedWorld, me: usize, ttl: u64) -> MemDcs {
        MemDcs {
            world,
            me,
            name: name(me),
            lease: Arc::default(),
            ttl: Arc::new(AtomicU64::new(ttl)),
            copy: Arc::default(),
            kept: Arc::default(),
            written: Arc::default(),
        }
    }

    /// Waits out a freeze, then a cut (until `deadline`); runs `f` on the store if it answers.
    async fn call<T>(
        &self,
        op: &'static str,
        deadline: Instant,
        f: impl FnOnce(&mut World, &Self) -> T,
    ) -> DcsResult<T> {
        super::wait_while_frozen(&self.world, self.me).await;
        let cut_until = {
            let w = self.world.lock().unwrap();
            let m = &w.machines[self.me];
            (m.dcs_cut_until > w.now()).then(|| w.start + std::time::Duration::from_millis(m.dcs_cut_until))
        };
        if let Some(until) = cut_until {
            let started = Instant::now();
            tokio::time::sleep_until(until.min(deadline)).await;
            if until > deadline {
                return Err(DcsError::Timeout { op, endpoints: "sim".into(), after: Instant::now() - started });
            }
        }
        if Instant::now() > deadline {
            return Err(DcsError::Timeout { op, endpoints: "sim".into(), after: std::time::Duration::ZERO });
        }
        let mut w = self.world.lock().unwrap();
        let now = w.now();
        w.store.expire(now);
        let before = w.store.revision;
        let out = f(&mut w, self);
        if w.store.revision != before {
            self.written.fetch_max(w.store.revision, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// `copy`, unless it is from before this member's own last write (then it cannot tell).
    fn shows_own_writes<'c>(&self, copy: &'c Cluster) -> Option<&'c Cluster> {
        (copy.revision >= self.written.load(Ordering::Relaxed)).then_some(copy)
    }

    fn key(&self, w: &World, k: &str) -> String {
        w.prefix.key(k)
    }

    /// Keeps the lease alive, granting a new one if it expired.
    fn refresh(&self, w: &mut World) -> i64 {
        let now = w.now();
        let ttl_ms = self.ttl.load(Ordering::Relaxed) * 1000;
        let current = self.lease.load(Ordering::Relaxed);
        if current != 0 && w.store.leases.contains_key(&current) {
            w.store.leases.insert(current, now + ttl_ms);
            return current;
        }
        w.store.last_lease += 1;
        let id = w.store.last_lease;
        w.store.leases.insert(id, now + ttl_ms);
        self.lease.store(id, Ordering::Relaxed);
        id
    }

    /// The lock: created if free, moved to our lease if ours; whether we hold it.
    fn assert_lock(&self, w: &mut World) -> bool {
        let lease = self.refresh(w);
        let key = self.key(w, keys::LEADER);
        match w.store.get(&key) {
            Some(holder) if holder != self.name => false,
            _ => {
                w.store.put(key, self.name.clone(), lease);
                true
            }
        }
    }

    fn put_json(&self, w: &mut World, k: &str, value: String) {
        let key = self.key(w, k);
        w.store.put(key, value, 0);
    }

    fn cas(&self, w: &mut World, k: &str, expected: i64, value: Option<String>) -> bool {
        let key = self.key(w, k);
        let rev = w.store.kv.get(&key).map_or(0, |(_, _, r)| *r);
        // A compare counts as a write: etcd's answer carries the revision it was judged at.
        self.written.fetch_max(w.store.revision, Ordering::Relaxed);
        if rev != expected {
            return false;
        }
        match value {
            Some(v) => w.store.put(key, v, 0),
            None => {
                w.store.delete(&key);
            }
        }
        true
    }
}

impl Dcs for MemDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn op_deadline(&self) -> Instant {
        Instant::now() + OP_TIMEOUT
    }

    async fn read_cluster(&self, deadline: Instant) -> DcsResult<Cluster> {
        self.call("read_cluster", deadline, |w, _| Cluster::from_kvs(&w.prefix, &w.store.kvs(), w.store.revision)).await
    }

    async fn refresh_lease(&self, deadline: Instant) -> DcsResult<KeptAlive> {
        let sent = Instant::now();
        let kept = self
            .call("refresh_lease", deadline, |w, me| KeptAlive {
                lease: me.refresh(w),
                sent,
                revision: Some(w.store.revision),
                endpoint: 0,
            })
            .await?;
        *self.kept.lock().unwrap() = Some((kept.sent, kept.lease));
        Ok(kept)
    }

    /// The copy: none while the member is cut off from the store or frozen (then it must read,
    /// and that read waits or fails as any call does); else the store as it was when the copy
    /// last caught up, which it does once it is `watch_lag` old.
    async fn cached_cluster(&self, _kept: &KeptAlive, _wait: std::time::Duration) -> Option<Cluster> {
        let w = self.world.lock().unwrap();
        let now = w.now();
        let m = &w.machines[self.me];
        if m.dcs_cut_until > now || m.frozen_until > now {
            return None;
        }
        let mut copy = self.copy.lock().unwrap();
        match &*copy {
            // Not from before our own last write: the adapter waits for the stream to show it,
            // and a stream this far behind does not within the wait; the cycle reads instead.
            Some((at, cluster)) if now.saturating_sub(*at) < m.watch_lag => self.shows_own_writes(cluster).cloned(),
            _ => {
                let cluster = Cluster::from_kvs(&w.prefix, &w.store.kvs(), w.store.revision);
                *copy = Some((now, cluster.clone()));
                Some(cluster)
            }
        }
    }

    fn set_ttl(&self, secs: u64) {
        if self.ttl.swap(secs, Ordering::Relaxed) != secs {
            self.lease.store(0, Ordering::Relaxed);
        }
    }

    async fn touch_member(&self, data: &MemberData, deadline: Instant) -> DcsResult<()> {
        let value = serde_json::to_string(data).expect("member data serializes");
        self.call("touch_member", deadline, |w, me| {
            let lease = me.refresh(w);
            let key = w.prefix.member(&me.name);
            w.store.put(key, value, lease);
        })
        .await
    }

    async fn delete_member(&self, deadline: Instant) -> DcsResult<()> {
        self.call("delete_member", deadline, |w, me| {
            let key = w.prefix.member(&me.name);
            w.store.delete(&key);
        })
        .await
    }

    async fn try_initialize(&self, value: &str, deadline: Instant) -> DcsResult<bool> {
        self.call("try_initialize", deadline, |w, me| {
            let key = me.key(w, keys::INITIALIZE);
            let free = w.store.get(&key).is_none();
            if free {
                w.store.put(key, value.to_string(), 0);
            }
            free
        })
        .await
    }

    async fn set_initialize(&self, sysid: &str, deadline: Instant) -> DcsResult<()> {
        self.call("set_initialize", deadline, |w, me| me.put_json(w, keys::INITIALIZE, sysid.to_string())).await
    }

    async fn cancel_initialize(&self, deadline: Instant) -> DcsResult<()> {
        self.call("cancel_initialize", deadline, |w, me| {
            let key = me.key(w, keys::INITIALIZE);
            w.store.delete(&key);
        })
        .await
    }

    async fn acquire_leader(&self, deadline: Instant) -> DcsResult<bool> {
        self.call("acquire_leader", deadline, |w, me| me.assert_lock(w)).await
    }

    /// As the etcd adapter: the core's [`lock_renewal`] on the (lagging) copy decides whether
    /// this cycle's keep-alive renewed the lock, else a transaction asserts it.
    async fn renew_leader(&self, deadline: Instant) -> DcsResult<Option<Instant>> {
        let this_cycle = self.kept.lock().unwrap().filter(|(sent, _)| sent.elapsed() < OP_TIMEOUT);
        let copy_lock = self.copy.lock().unwrap().as_ref().and_then(|(_, c)| self.shows_own_writes(c)?.leader.clone());
        if let (LockRenewal::ByKeepAlive, Some((sent, _))) =
            (lock_renewal(copy_lock.as_ref(), &self.name, this_cycle.map(|(_, lease)| lease)), this_cycle)
        {
            return Ok(Some(sent));
        }
        let sent = Instant::now();
        self.call("renew_leader", deadline, |w, me| me.assert_lock(w).then_some(sent)).await
    }

    async fn release_leader(&self, deadline: Instant) -> DcsResult<bool> {
        self.call("release_leader", deadline, |w, me| {
            let key = me.key(w, keys::LEADER);
            w.store.get(&key) == Some(me.name.as_str()) && w.store.delete(&key)
        })
        .await
    }

    async fn write_status(&self, status: &Status, deadline: Instant) -> DcsResult<()> {
        let value = serde_json::to_string(status).expect("status serializes");
        self.call("write_status", deadline, |w, me| me.put_json(w, keys::STATUS, value)).await
    }

    async fn write_failsafe(&self, topology: &Topology, deadline: Instant) -> DcsResult<()> {
        let value = serde_json::to_string(topology).expect("topology serializes");
        self.call("write_failsafe", deadline, |w, me| me.put_json(w, keys::FAILSAFE, value)).await
    }

    async fn write_history(&self, history: &[HistoryEntry], deadline: Instant) -> DcsResult<()> {
        let lines: Vec<serde_json::Value> = history.iter().map(HistoryEntry::to_json).collect();
        let value = serde_json::to_string(&lines).expect("history serializes");
        self.call("write_history", deadline, |w, me| me.put_json(w, keys::HISTORY, value)).await
    }

    async fn write_backup(&self, report: &rampart_core::backup::BackupReport, deadline: Instant) -> DcsResult<()> {
        let value = serde_json::to_string(report).expect("report serializes");
        self.call("write_backup", deadline, |w, me| me.put_json(w, keys::BACKUP, value)).await
    }

    async fn set_config_if_absent(&self, json: &str, deadline: Instant) -> DcsResult<bool> {
        self.call("set_config_if_absent", deadline, |w, me| me.cas(w, keys::CONFIG, 0, Some(json.to_string()))).await
    }

    async fn set_config(&self, json: &str, expected_mod_revision: Option<i64>, deadline: Instant) -> DcsResult<bool> {
        self.call("set_config", deadline, |w, me| match expected_mod_revision {
            Some(rev) => me.cas(w, keys::CONFIG, rev, Some(json.to_string())),
            None => {
                me.put_json(w, keys::CONFIG, json.to_string());
                true
            }
        })
        .await
    }

    async fn set_failover(&self, failover: &Failover, deadline: Instant) -> DcsResult<()> {
        let value = serde_json::to_string(failover).expect("failover serializes");
        self.call("set_failover", deadline, |w, me| me.put_json(w, keys::FAILOVER, value)).await
    }

    async fn clear_failover(&self, deadline: Instant) -> DcsResult<()> {
        self.call("clear_failover", deadline, |w, me| me.put_json(w, keys::FAILOVER, "{}".into())).await
    }

    async fn write_sync(&self, state: &SyncState, expected_revision: i64, deadline: Instant) -> DcsResult<bool> {
        let value = serde_json::to_string(state).expect("sync state serializes");
        self.call("write_sync", deadline, |w, me| me.cas(w, keys::SYNC, expected_revision, Some(value))).await
    }

    async fn delete_sync(&self, expected_revision: i64, deadline: Instant) -> DcsResult<bool> {
        self.call("delete_sync", deadline, |w, me| me.cas(w, keys::SYNC, expected_revision, None)).await
    }

    async fn delete_cluster(&self, deadline: Instant) -> DcsResult<()> {
        self.call("delete_cluster", deadline, |w, _| {
            let prefix = w.prefix.as_str().to_string();
            w.store.kv.retain(|k, _| !k.starts_with(&prefix));
            w.store.revision += 1;
        })
        .await
    }
}
