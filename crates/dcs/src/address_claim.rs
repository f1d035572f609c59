//! The proxies' claim on their shared virtual address (`proxy.vip`): the key
//! `<prefix>proxy_vip/<address>`, holding the claimant's proxy id on a lease of its own. Who may
//! hold the address, and when to claim, is the core's ([`rampart_core::proxy_address`]); this
//! only talks to etcd.
//!
//! Invariants:
//! * a claim is the leader lock's transaction ([`crate::leader::hold`]): it succeeds only when the
//!   key is absent or already this proxy's, in one round trip, so two proxies never both see a
//!   claim confirmed while the first one's lease lives;
//! * the lease is the claim's own (neither the proxy's drain registration's nor any member's), so
//!   a proxy stops holding exactly when it stops renewing this one;
//! * releasing deletes the key only if it is still this proxy's, then revokes the lease.

use tokio::time::Instant;

use crate::dcs::DcsResult;
use crate::etcd::EtcdDcs;
use crate::lease::LeaseSlot;

/// One proxy's claim on one address. Obtained from [`EtcdDcs::address_claim`].
pub struct AddressClaim {
    dcs: EtcdDcs,
    id: String,
    key: String,
    lease: LeaseSlot,
}

impl std::fmt::Debug for AddressClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressClaim").field("key", &self.key).field("id", &self.id).finish()
    }
}

impl EtcdDcs {
    /// The claim of proxy `id` on the cluster's proxy address `address`, on a lease of `ttl`
    /// seconds. Nothing is sent until [`AddressClaim::claim`].
    pub fn address_claim(&self, address: &str, id: &str, ttl: u64) -> AddressClaim {
        AddressClaim {
            dcs: self.clone(),
            id: id.to_string(),
            key: self.inner.prefix.proxy_address(address),
            lease: LeaseSlot::new(ttl),
        }
    }
}

impl AddressClaim {
    /// The key claimed.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Switches to a lease of `ttl` seconds from the next claim on (the cluster's `ttl` changed):
    /// the next claim grants one and moves the key to it.
    pub fn set_ttl(&self, ttl: u64) {
        self.lease.set_ttl(ttl);
    }

    /// Renews the claim's lease (or grants one) and claims the key: true if the key is now this
    /// proxy's, false if another proxy's claim stands.
    pub async fn claim(&self, deadline: Instant) -> DcsResult<bool> {
        self.dcs.hold_key(&self.lease, "claim_proxy_address", &self.key, &self.id, deadline).await
    }

    /// Deletes the key if it is still this proxy's and revokes the lease, so that another proxy
    /// can claim at once (a clean stop).
    pub async fn release(self, deadline: Instant) -> DcsResult<()> {
        let started = Instant::now();
        let conn = &self.dcs.inner.conn;
        let txn = crate::leader::release(&self.key, &self.id);
        conn.call(deadline, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await.map(drop) }
        })
        .await
        .map_err(|f| conn.error("release_proxy_address", f, started))?;
        self.lease.revoke(conn, deadline).await.map_err(|f| conn.error("release_proxy_address", f, started))
    }
}
