//! `proxy.vip`: the proxies that share a virtual address elect one holder through an etcd lease
//! under the cluster's keys, as the Pgpool-II watchdog does with its `delegate_IP` (seed 001),
//! so that the proxy tier has no single point of failure. The rules (when to claim, until when
//! a claim lets the proxy hold the address) are the core's ([`rampart_core::proxy_address`]);
//! the claim is [`rampart_dcs::AddressClaim`]; the address is [`crate::vip::HostAddress`].
//!
//! Invariants:
//! * the host has the address only while the core's rule says so, checked after every claim and
//!   at the moment the claim stops covering it: a claim call that hangs is cut off at that moment,
//!   so a proxy cut off from etcd has given the address up before its lease could end;
//! * a leftover address from an earlier run is removed before the first claim;
//! * a stopping proxy gives the address up first, then releases its claim, so the next proxy
//!   takes over at once rather than after the lease.

use std::sync::Arc;
use std::time::Duration;

use rampart_config::Vip;
use rampart_core::proxy_address::{claim_due, may_hold, ClaimView, Timing};
use rampart_core::{Cluster, Millis};
use rampart_dcs::{Dcs, EtcdDcs};
use rampart_proxy::admin::VipFigures;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::vip::keeper::AddressKeeper;
use crate::vip::HostAddress;

/// Pause after a failed claim before the next one (etcd unreachable fails fast).
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(500);

/// The running election of one proxy; [`Election::stop`] gives the address up and releases the
/// claim.
pub struct Election {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts claiming `vip` for the proxy `id`, on a lease of the cluster's `ttl` (`ttl` seconds
    /// until the proxy has read the cluster's configuration); `cluster` is the proxy's latest
    /// read of the cluster, `figures` what its admin port shows.
    pub fn start(
        dcs: EtcdDcs,
        vip: Vip,
        ttl: u64,
        id: String,
        cluster: watch::Receiver<Option<Arc<Cluster>>>,
        figures: watch::Sender<VipFigures>,
    ) -> Election {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run(dcs, vip, ttl, id, cluster, figures, stop.clone()));
        Election { stop, task }
    }

    /// Gives the address up and releases the claim, within `bound`.
    pub async fn stop(self, bound: Duration) {
        self.stop.notify_one();
        if tokio::time::timeout(bound, self.task).await.is_err() {
            warn!("the proxies' virtual address: giving up and releasing did not end within {bound:?}");
        }
    }
}

/// The figures of a fresh election.
pub fn initial_figures(vip: &Vip, id: &str) -> VipFigures {
    VipFigures { address: vip.ip.to_string(), me: id.to_string(), ..VipFigures::default() }
}

async fn run(
    dcs: EtcdDcs,
    vip: Vip,
    ttl: u64,
    id: String,
    mut cluster: watch::Receiver<Option<Arc<Cluster>>>,
    figures: watch::Sender<VipFigures>,
    stop: Arc<Notify>,
) {
    let address = vip.ip.to_string();
    let down_cmd_ms = if vip.if_down_cmd.is_some() { vip.cmd_timeout.as_millis() as u64 } else { 0 };
    // The cluster's ttl, as the members use it: the file's until the configuration key is read.
    let cluster_ttl = |cluster: &watch::Receiver<Option<Arc<Cluster>>>| {
        cluster.borrow().as_ref().and_then(|c| c.config.as_ref().map(|d| d.ttl)).unwrap_or(ttl).max(1)
    };
    let mut ttl = cluster_ttl(&cluster);
    let mut timing = Timing::new(ttl, down_cmd_ms);
    let claim = dcs.address_claim(&address, &id, ttl);
    let mut keeper = AddressKeeper::new(HostAddress::new(vip.clone()), &vip);
    let start = Instant::now();
    let now = || Millis(start.elapsed().as_millis() as u64);
    let at = |m: Millis| start + Duration::from_millis(m.0);
    let give_up_limit = Duration::from_millis(timing.give_up_ms);
    info!(
        address = %address,
        id = %id,
        key = claim.key(),
        "the proxies' virtual address: claiming it through etcd (renewed every {} ms, held at most {} ms after a renewal)",
        timing.renew_every_ms(),
        timing.ttl_ms - timing.give_up_ms,
    );
    // Whatever an earlier run left on this host goes before anything is claimed.
    keeper.apply(false, give_up_limit).await;

    // When the request etcd last confirmed as this proxy's claim was sent, with the timing of
    // the lease it renewed (a ttl changed since applies from the next claim on).
    let mut confirmed: Option<(Millis, Timing)> = None;
    let mut retry_at = Millis(0);
    let mut last_error: Option<String> = None;
    let mut last_holder: Option<String> = None;
    // A standby also claims once a ttl even when its view shows a holder: a view of the cluster
    // that stopped changing (the proxy's reads failing) must not keep it standing by for good.
    let mut standby_since_check = now();
    let mut view_open = true;
    loop {
        let now_ttl = cluster_ttl(&cluster);
        if now_ttl != ttl {
            info!(address = %address, "the proxies' virtual address: the cluster's ttl is {now_ttl} s; the claim follows");
            ttl = now_ttl;
            timing = Timing::new(ttl, down_cmd_ms);
            claim.set_ttl(ttl);
        }
        let holder = cluster.borrow().as_ref().and_then(|c| c.proxy_addresses.get(&address).cloned());
        let other_holder_seen = holder.as_ref().is_some_and(|h| *h != id);
        let view_of = |c: Option<(Millis, Timing)>| ClaimView { confirmed: c.map(|(sent, _)| sent), other_holder_seen };
        let timing_of = |c: Option<(Millis, Timing)>| c.map_or(timing, |(_, t)| t);
        let n = now();
        let recheck = confirmed.is_none() && n.0 >= standby_since_check.0 + timing.ttl_ms;
        if (claim_due(view_of(confirmed), n, timing_of(confirmed)) || recheck) && n >= retry_at {
            standby_since_check = n;
            // A holder's claim is cut off when it stops covering the address.
            let mut deadline = dcs.op_deadline();
            if let Some((sent, t)) = confirmed {
                deadline = deadline.min(at(t.hold_until(sent)));
            }
            let outcome = tokio::select! {
                r = claim.claim(deadline) => Some(r),
                () = stop.notified() => None,
            };
            let Some(outcome) = outcome else { break };
            match outcome {
                Ok(true) => {
                    if confirmed.is_none() {
                        info!(address = %address, "the proxies' virtual address: claim confirmed, this proxy holds it");
                    }
                    confirmed = Some((n, timing));
                    last_error = None;
                }
                Ok(false) => {
                    if confirmed.is_some() {
                        warn!(address = %address, "the proxies' virtual address: another proxy's claim stands; giving it up");
                    }
                    confirmed = None;
                    last_error = None;
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(text.as_str()) {
                        warn!(address = %address, "the proxies' virtual address: claim failed: {text}");
                    }
                    last_error = Some(text);
                    retry_at = now().plus_ms(RETRY_AFTER_ERROR.as_millis() as u64);
                }
            }
        }
        let n = now();
        let hold = may_hold(view_of(confirmed), n, timing_of(confirmed));
        if confirmed.is_some() && !hold {
            warn!(address = %address, "the proxies' virtual address: claim not renewed in time; giving it up before the lease could end");
            confirmed = None;
        }
        keeper.apply(hold, give_up_within(confirmed, n, give_up_limit)).await;
        if holder != last_holder && !hold {
            if let Some(h) = holder.as_ref().filter(|h| **h != id) {
                info!(address = %address, holder = %h, "the proxies' virtual address: standing by, another proxy holds it");
            }
        }
        last_holder = holder.clone();
        publish(&figures, &keeper, if confirmed.is_some() { Some(id.clone()) } else { holder });

        // Wake for the next renewal or the end of the hold (holder), for a new view of the
        // cluster (standby), or to retry after an error.
        // A retry after an error never postpones the end of the hold.
        let wake = match confirmed {
            Some((sent, t)) => at(sent.plus_ms(t.renew_every_ms()).max(retry_at).min(t.hold_until(sent))),
            None => at(n.plus_ms(timing.ttl_ms).max(retry_at)),
        };
        let standby = confirmed.is_none() && view_open;
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            r = cluster.changed(), if standby => if r.is_err() { view_open = false },
            () = stop.notified() => break,
        }
    }
    // Given up first, then released: no moment with the key free and the address still here.
    keeper.apply(false, give_up_within(confirmed, now(), give_up_limit)).await;
    match claim.release(dcs.op_deadline()).await {
        Ok(()) => info!(address = %address, "the proxies' virtual address: given up and released"),
        Err(e) => {
            warn!(address = %address, "the proxies' virtual address: releasing the claim: {e} (it ends with its lease)")
        }
    }
    publish(&figures, &keeper, None);
}

/// How long giving the address up may take at `now`: until the confirmed claim's lease could
/// end, or `otherwise` without one.
fn give_up_within(confirmed: Option<(Millis, Timing)>, now: Millis, otherwise: Duration) -> Duration {
    confirmed.map_or(otherwise, |(sent, t)| Duration::from_millis(t.lease_end(sent).0.saturating_sub(now.0)))
}

/// What the admin port shows: the host's address as the keeper last saw it, and `holder`.
fn publish(figures: &watch::Sender<VipFigures>, keeper: &AddressKeeper<HostAddress>, holder: Option<String>) {
    let state = keeper.state();
    figures.send_modify(|f| {
        f.held = state.held;
        f.changes = state.changes;
        f.holder = holder;
    });
}
