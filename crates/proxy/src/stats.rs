//! What the proxy counts, for the admin port (`/metrics`, `/stats.json`, `/stats`) and for the
//! least-connections policy.
//!
//! Sessions update plain atomics through an [`Arc<BackendCounters>`] they look up once, at
//! connect time, so relaying bytes never takes a lock. The few maps (one entry per backend and
//! port, per routing outcome) are locked only when a session starts or ends and when the admin
//! port renders a snapshot.
//!
//! Invariant: a backend's `active` count is raised exactly once per session that connected to
//! it and lowered exactly once when that session ends ([`ActiveGuard`] does the lowering in
//! `Drop`), so least-connections never drifts, whatever way the session ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_core::Cluster;

use crate::session::Port;
use crate::topology::Backend;

/// Upper bounds (seconds) of the hold-duration histogram buckets.
pub const HOLD_BUCKETS: [f64; 9] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counters of one backend reached through one port.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Sessions open now.
    pub active: AtomicU64,
    /// Sessions ever connected.
    pub total: AtomicU64,
    /// Bytes relayed from clients to this backend.
    pub bytes_to_server: AtomicU64,
    /// Bytes relayed from this backend to clients.
    pub bytes_to_client: AtomicU64,
}

/// Where a new session was sent (or why it was not), for the routing-decision counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    /// To the primary.
    Primary,
    /// To a replica.
    Replica,
    /// A read-only client sent to the primary because no replica qualified.
    FallbackPrimary,
    /// Refused: no backend (no replica without fallback, or the hold timed out).
    Refused,
    /// The chosen backend could not be reached before the hold ended.
    ConnectFailed,
}

impl Decision {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Primary => "primary",
            Decision::Replica => "replica",
            Decision::FallbackPrimary => "fallback_primary",
            Decision::Refused => "refused",
            Decision::ConnectFailed => "connect_failed",
        }
    }
}

/// Hold statistics: clients that waited for a primary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holds {
    /// Holds that ended, either way.
    pub count: u64,
    /// Sum of their durations, in seconds.
    pub sum_secs: f64,
    /// Cumulative counts per [`HOLD_BUCKETS`] bound.
    pub buckets: [u64; HOLD_BUCKETS.len()],
    /// Holds that ended without a primary (the client got an error).
    pub timeouts: u64,
    /// Clients held right now.
    pub waiting: u64,
}

/// The proxy's statistics, shared by every session, the follower and the admin port.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    backends: Mutex<BTreeMap<(String, Port), Arc<BackendCounters>>>,
    decisions: Mutex<BTreeMap<(Port, Decision), u64>>,
    holds: Mutex<Holds>,
    /// Client connections accepted, per port (rw, ro).
    accepted: [AtomicU64; 2],
    /// Connections closed for a protocol violation (garbage, oversized messages).
    protocol_errors: AtomicU64,
    /// Sessions closed with 57P01 because the leader changed.
    fenced: AtomicU64,
    /// Cancel requests forwarded to a backend.
    cancels: AtomicU64,
    /// TLS handshakes completed / failed.
    tls: [AtomicU64; 2],
    view: Mutex<Option<(Cluster, tokio::time::Instant)>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            backends: Mutex::default(),
            decisions: Mutex::default(),
            holds: Mutex::default(),
            accepted: Default::default(),
            protocol_errors: AtomicU64::new(0),
            fenced: AtomicU64::new(0),
            cancels: AtomicU64::new(0),
            tls: Default::default(),
            view: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn port_index(port: Port) -> usize {
    match port {
        Port::ReadWrite => 0,
        Port::ReadOnly => 1,
    }
}

/// Lowers a backend's active count when the session holding it ends.
#[derive(Debug)]
pub struct ActiveGuard(Arc<BackendCounters>);

impl ActiveGuard {
    /// The counters this session adds its bytes to.
    pub fn counters(&self) -> &BackendCounters {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// A client connection was accepted on `port`.
    pub fn accepted(&self, port: Port) {
        self.accepted[port_index(port)].fetch_add(1, Ordering::Relaxed);
    }

    /// A session connected to `backend` through `port`: counts it active until the guard drops.
    pub fn connected(&self, backend: &Backend, port: Port) -> ActiveGuard {
        let c = lock(&self.backends).entry((backend.name.clone(), port)).or_default().clone();
        c.active.fetch_add(1, Ordering::Relaxed);
        c.total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(c)
    }

    /// Sessions open now to the backend named `name`, through either port.
    pub fn active_on(&self, name: &str) -> u64 {
        lock(&self.backends).iter().filter(|((n, _), _)| n == name).map(|(_, c)| c.active.load(Ordering::Relaxed)).sum()
    }

    /// Records a routing decision.
    pub fn decided(&self, port: Port, decision: Decision) {
        *lock(&self.decisions).entry((port, decision)).or_default() += 1;
    }

    /// A client starts waiting for a primary.
    pub fn hold_started(&self) {
        lock(&self.holds).waiting += 1;
    }

    /// A hold that lasted `held` ended; `served` when a primary came.
    pub fn hold_ended(&self, held: Duration, served: bool) {
        let mut h = lock(&self.holds);
        h.waiting = h.waiting.saturating_sub(1);
        h.count += 1;
        let secs = held.as_secs_f64();
        h.sum_secs += secs;
        for (bound, n) in HOLD_BUCKETS.iter().zip(h.buckets.iter_mut()) {
            if secs <= *bound {
                *n += 1;
            }
        }
        if !served {
            h.timeouts += 1;
        }
    }

    /// A connection was closed for a protocol violation.
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A read-write session was closed because the leader changed.
    pub fn fenced(&self) {
        self.fenced.fetch_add(1, Ordering::Relaxed);
    }

    /// A cancel request was forwarded.
    pub fn cancel_forwarded(&self) {
        self.cancels.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake finished, well or not.
    pub fn tls_handshake(&self, ok: bool) {
        self.tls[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The follower read `cluster` with a read that began at `at`.
    pub fn set_view(&self, cluster: &Cluster, at: tokio::time::Instant) {
        *lock(&self.view) = Some((cluster.clone(), at));
    }

    /// A consistent copy of everything, for rendering.
    pub fn snapshot(&self) -> Snapshot {
        let backends = lock(&self.backends)
            .iter()
            .map(|((name, port), c)| BackendSnapshot {
                name: name.clone(),
                port: *port,
                active: c.active.load(Ordering::Relaxed),
                total: c.total.load(Ordering::Relaxed),
                bytes_to_server: c.bytes_to_server.load(Ordering::Relaxed),
                bytes_to_client: c.bytes_to_client.load(Ordering::Relaxed),
            })
            .collect();
        let decisions = lock(&self.decisions).iter().map(|(&(p, d), &n)| (p, d, n)).collect();
        let view = lock(&self.view).as_ref().map(|(c, at)| (c.clone(), at.elapsed()));
        Snapshot {
            uptime: self.started.elapsed(),
            accepted_rw: self.accepted[0].load(Ordering::Relaxed),
            accepted_ro: self.accepted[1].load(Ordering::Relaxed),
            backends,
            decisions,
            holds: lock(&self.holds).clone(),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            cancels: self.cancels.load(Ordering::Relaxed),
            tls_ok: self.tls[0].load(Ordering::Relaxed),
            tls_failed: self.tls[1].load(Ordering::Relaxed),
            view,
        }
    }
}

/// One backend's counters through one port, copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSnapshot {
    /// Member name.
    pub name: String,
    /// The port its clients came in on.
    pub port: Port,
    /// Sessions open now.
    pub active: u64,
    /// Sessions ever connected.
    pub total: u64,
    /// Bytes from clients.
    pub bytes_to_server: u64,
    /// Bytes to clients.
    pub bytes_to_client: u64,
}

/// Everything the admin port shows, copied at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Time since the proxy started.
    pub uptime: Duration,
    /// Client connections accepted on the read-write port.
    pub accepted_rw: u64,
    /// Client connections accepted on the read-only port.
    pub accepted_ro: u64,
    /// Per backend and port.
    pub backends: Vec<BackendSnapshot>,
    /// Routing decisions: port, outcome, count.
    pub decisions: Vec<(Port, Decision, u64)>,
    /// Holds.
    pub holds: Holds,
    /// Connections closed for a protocol violation.
    pub protocol_errors: u64,
    /// Sessions closed because the leader changed.
    pub fenced: u64,
    /// Cancel requests forwarded.
    pub cancels: u64,
    /// TLS handshakes completed.
    pub tls_ok: u64,
    /// TLS handshakes that failed.
    pub tls_failed: u64,
    /// The last cluster the follower read and how old that read is; `None` before the first.
    pub view: Option<(Cluster, Duration)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str) -> Backend {
        Backend { name: name.into(), host: "127.0.0.1".into(), port: 5432, weight: 1000 }
    }

    #[test]
    fn active_counts_follow_guards() {
        let s = Stats::default();
        let g1 = s.connected(&b("a"), Port::ReadOnly);
        let g2 = s.connected(&b("a"), Port::ReadWrite);
        let _g3 = s.connected(&b("b"), Port::ReadOnly);
        assert_eq!((s.active_on("a"), s.active_on("b"), s.active_on("c")), (2, 1, 0));
        g1.counters().bytes_to_client.fetch_add(10, Ordering::Relaxed);
        drop(g1);
        drop(g2);
        assert_eq!(s.active_on("a"), 0);
        let snap = s.snapshot();
        let a_ro = snap.backends.iter().find(|x| x.name == "a" && x.port == Port::ReadOnly).unwrap();
        assert_eq!((a_ro.active, a_ro.total, a_ro.bytes_to_client), (0, 1, 10));
    }

    #[test]
    fn holds_fill_cumulative_buckets() {
        let s = Stats::default();
        s.hold_started();
        s.hold_started();
        assert_eq!(s.snapshot().holds.waiting, 2);
        s.hold_ended(Duration::from_millis(300), true);
        s.hold_ended(Duration::from_secs(40), false);
        let h = s.snapshot().holds;
        assert_eq!((h.count, h.timeouts, h.waiting), (2, 1, 0));
        assert_eq!(h.buckets, [0, 0, 1, 1, 1, 1, 1, 1, 2]);
        assert!((h.sum_secs - 40.3).abs() < 1e-9);
    }

    #[test]
    fn decisions_are_counted_per_port() {
        let s = Stats::default();
        s.decided(Port::ReadOnly, Decision::Replica);
        s.decided(Port::ReadOnly, Decision::Replica);
        s.decided(Port::ReadWrite, Decision::Refused);
        let d = s.snapshot().decisions;
        assert!(d.contains(&(Port::ReadOnly, Decision::Replica, 2)));
        assert!(d.contains(&(Port::ReadWrite, Decision::Refused, 1)));
    }
}
