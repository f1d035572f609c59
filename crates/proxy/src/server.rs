//! The listeners and the follower that keeps the routes current.
//!
//! [`bind`] opens the read-write and (optionally) read-only listeners before anything else, so
//! a port in use is an error at start; [`Listeners::serve`] accepts, handing each connection to a
//! worker, until [`Accepting::close`], which closes the sockets (a load balancer then sees the
//! port gone at once). [`follow`] turns cluster snapshots into
//! [`Routes`] on a watch channel, failing closed when the snapshots stop coming.

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;
use tokio::task::JoinHandle;

use rampart_core::Cluster;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::session::Port;
use crate::stats::Stats;
use crate::topology::{self, LeaderPositions, Policy, Routes};
use crate::workers::Workers;

/// The proxy's listening sockets.
#[derive(Debug)]
pub struct Listeners {
    rw: TcpListener,
    ro: Option<TcpListener>,
}

/// Binds the read-write listener and the read-only one when given.
pub async fn bind(rw: &str, ro: Option<&str>) -> std::io::Result<Listeners> {
    let rw_l =
        TcpListener::bind(rw).await.map_err(|e| std::io::Error::new(e.kind(), format!("listening on {rw}: {e}")))?;
    let ro_l = match ro {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?,
        ),
        None => None,
    };
    Ok(Listeners { rw: rw_l, ro: ro_l })
}

impl Listeners {
    /// Starts accepting connections, handing each to `workers`.
    pub fn serve(self, workers: Arc<Workers>) -> Accepting {
        let mut loops = vec![tokio::spawn(accept_loop(self.rw, Port::ReadWrite, workers.clone()))];
        loops.extend(self.ro.map(|l| tokio::spawn(accept_loop(l, Port::ReadOnly, workers))));
        Accepting { loops }
    }
}

/// The running accept loops, each owning its listening socket.
#[derive(Debug)]
pub struct Accepting {
    loops: Vec<JoinHandle<()>>,
}

impl Accepting {
    /// Stops accepting and closes the listening sockets: once this returns, connection attempts
    /// are refused by the kernel. Connections already accepted are not touched.
    pub async fn close(self) {
        for l in &self.loops {
            l.abort();
        }
        // Awaiting the aborted tasks makes sure their listeners have been dropped (closed).
        for l in self.loops {
            let _ = l.await;
        }
    }
}

async fn accept_loop(listener: TcpListener, port: Port, workers: Arc<Workers>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => workers.dispatch(stream, port, peer.to_string()),
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How often the follower re-reads the cluster even without a watch event.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `tx` current: reads the cluster with `read` whenever `wake` fires or [`POLL_INTERVAL`]
/// passes, and recomputes the routes from the last good snapshot and its age after every
/// attempt, so routes fail closed once reads have failed for longer than ttl. Every good
/// snapshot is also handed to `stats` for the admin port. Runs until every receiver is gone.
pub async fn follow<F, Fut, E>(
    mut read: F,
    wake: Arc<Notify>,
    policy: Policy,
    tx: watch::Sender<Routes>,
    stats: Arc<Stats>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Cluster, E>>,
    E: std::fmt::Display,
{
    // The last good snapshot and when the read that returned it began (conservative: the
    // snapshot is at least that old).
    let mut last: Option<(Cluster, Instant)> = None;
    let mut leader_positions = LeaderPositions::default();
    let mut failing = false;
    loop {
        // First what time alone changes: a snapshot that just went stale loses its primary now,
        // not after a read that may take a while to fail.
        publish(&tx, last.as_ref(), policy, &mut leader_positions);
        let stale_at = last.as_ref().map(|(c, at)| stale_after(c, *at, policy));
        let began = Instant::now();
        // A read that hangs must not keep a stale primary route alive: give up on it when the
        // snapshot goes stale, publish that, and read again.
        let result = match stale_at {
            Some(t) if t > began => tokio::time::timeout_at(t, read()).await.map_err(|_| ()),
            _ => Ok(read().await),
        };
        match result {
            Ok(Ok(c)) => {
                if failing {
                    tracing::info!("reading the cluster from the DCS works again");
                    failing = false;
                }
                stats.set_view(&c, began);
                leader_positions.observe(&c, began.into_std());
                last = Some((c, began));
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!("reading the cluster from the DCS: {e}");
                    failing = true;
                }
            }
            Err(()) => {
                if !failing {
                    tracing::warn!("reading the cluster from the DCS: no answer");
                    failing = true;
                }
            }
        }
        publish(&tx, last.as_ref(), policy, &mut leader_positions);
        if tx.is_closed() {
            return;
        }
        // Wake on a watch event, on the poll interval, or just after the snapshot goes stale.
        let now = Instant::now();
        let stale_at = last.as_ref().map(|(c, at)| stale_after(c, *at, policy));
        let until = match stale_at {
            Some(t) if t > now => t.min(now + POLL_INTERVAL),
            _ => now + POLL_INTERVAL,
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

/// Publishes the routes for the last good snapshot, at its current age, if they changed.
fn publish(tx: &watch::Sender<Routes>, last: Option<&(Cluster, Instant)>, policy: Policy, seen: &mut LeaderPositions) {
    let routes = match last {
        Some((c, at)) => {
            let lag_from = seen.reference(Instant::now().into_std(), topology::lag_window(c));
            topology::routes(c, at.elapsed(), policy, wall_clock_ms(), lag_from)
        }
        None => Routes::default(),
    };
    tx.send_if_modified(|cur| {
        if *cur == routes {
            return false;
        }
        log_change(cur, &routes);
        *cur = routes;
        true
    });
}

/// Now as Unix milliseconds, only for comparing with a switchover's `scheduled_at`.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The first instant at which a snapshot read at `at` no longer gives a primary route.
fn stale_after(c: &Cluster, at: Instant, policy: Policy) -> Instant {
    at + topology::ttl(c, policy) + Duration::from_millis(1)
}

fn log_change(old: &Routes, new: &Routes) {
    if old.primary != new.primary {
        match &new.primary {
            Some(p) => tracing::info!(primary = %p.name, addr = %p.addr(), "read-write route"),
            None => tracing::warn!("no primary: read-write clients are held"),
        }
    }
    if old.replicas != new.replicas {
        let names: Vec<&str> = new.replicas.iter().map(|r| r.name.as_str()).collect();
        tracing::info!(replicas = ?names, "read-only routes");
    }
}

/// Keeps the server connection pools in step with time and the routes: once a second what is
/// due (idle and old connections closed, waiters timed out, `min_pool_size` opened), and on
/// every route change the pools of backends that stopped being routes retired (their idle
/// connections closed at once, the others as their transactions end). Runs until the routes'
/// sender goes away.
pub async fn maintain_pools(pools: Arc<crate::pools::Pools>, mut routes: watch::Receiver<Routes>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => pools.tick(),
            r = routes.changed() => {
                if r.is_err() {
                    return;
                }
                let addrs: Vec<String> = {
                    let r = routes.borrow_and_update();
                    r.primary.iter().chain(r.replicas.iter()).map(|b| b.addr()).collect()
                };
                pools.retire_except(&addrs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_core::model::{Leader, Member};
    use rampart_core::MemberData;

    fn cluster(leader: &str) -> Cluster {
        let m = Member {
            name: leader.into(),
            data: MemberData {
                conn_url: "postgres://127.0.0.1:5432/postgres".into(),
                state: "running".into(),
                role: "primary".into(),
                ..Default::default()
            },
            lease: 1,
        };
        Cluster {
            leader: Some(Leader { name: leader.into(), lease: 1, mod_revision: 1 }),
            members: vec![m],
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follower_fails_closed_when_reads_stop_working() {
        let ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ok2 = ok.clone();
        let read = move || {
            let ok = ok2.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if ok {
                    Ok(cluster("a"))
                } else {
                    Err("etcd down")
                }
            }
        };
        let (tx, mut rx) = watch::channel(Routes::default());
        let policy = Policy { max_lag: 0, default_ttl: Duration::from_secs(10) };
        let stats = Arc::new(Stats::default());
        tokio::spawn(follow(read, Arc::new(Notify::new()), policy, tx, stats.clone()));
        rx.wait_for(|r| r.primary.is_some()).await.unwrap();
        assert_eq!(stats.snapshot().view.map(|(c, _)| c.leader.unwrap().name), Some("a".to_string()));
        ok.store(false, std::sync::atomic::Ordering::SeqCst);
        let before = Instant::now();
        rx.wait_for(|r| r.primary.is_none()).await.unwrap();
        let took = before.elapsed();
        assert!(took > Duration::from_secs(8) && took <= Duration::from_millis(10_002), "within ttl: {took:?}");
        ok.store(true, std::sync::atomic::Ordering::SeqCst);
        rx.wait_for(|r| r.primary.is_some()).await.unwrap();
    }
}
