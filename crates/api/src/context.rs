//! What every request handler shares: the snapshot channel and live postmaster probe of the read
//! side, and for the write side the agent's [`Backend`], the member prober, the access policy and
//! the timings of a switchover.
//!
//! Invariants kept here:
//! * read endpoints use only the snapshot and the postmaster probe, never the backend, so they keep
//!   answering from the last snapshot while the DCS or the agent's loop is stuck;
//! * without a backend every write endpoint answers 503, so a half-started agent never pretends
//!   to have accepted an operation;
//! * the access policy defaults to "open" only because Patroni's does (no `restapi.authentication`
//!   and no allowlist means anyone may write); the agent passes the configured one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::Backend;
use crate::probe::{HttpProbe, MemberProbe};
use crate::security::{Security, SecurityHandle};
use crate::snapshot::NodeSnapshot;

/// Timings of the write endpoints. The defaults are Patroni's; tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTiming {
    /// Pause between two reads of the cluster while waiting for a switchover to finish
    /// (Patroni: 1 s; it reads `2 * max(10, loop_wait)` times).
    pub poll_interval: Duration,
    /// How long a candidate gets to answer `GET <api_url>` (Patroni: 2 s, no retries).
    pub probe_timeout: Duration,
    /// The unit of the switchover wait, `2 * max(10, loop_wait)` of them (Patroni: 1 s, the
    /// length of its poll). Polling more often than that must not shorten the wait.
    pub wait_unit: Duration,
}

impl Default for WriteTiming {
    fn default() -> Self {
        // Patroni polls once a second; a switchover now completes in about one, so look more often.
        WriteTiming {
            poll_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_secs(2),
            wait_unit: Duration::from_secs(1),
        }
    }
}

/// What the HTTP handlers share. Cheap to clone (everything is behind `Arc`s).
#[derive(Clone)]
pub struct ApiContext {
    /// Latest snapshot published by the agent.
    pub snapshot: watch::Receiver<NodeSnapshot>,
    /// Asked at request time, so that a dead PostgreSQL is reported at once rather than after
    /// the next HA cycle (Patroni keeps answering 200 on `/primary` until then). Must be cheap
    /// and must not block (e.g. `kill(pid, 0)` on the known postmaster PID).
    pub postmaster_alive: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The agent side of the write endpoints; `None` makes them answer 503.
    pub backend: Option<Arc<dyn Backend>>,
    /// Asks other members for their `/patroni` status (switchover candidate checks).
    pub probe: Arc<dyn MemberProbe>,
    /// Who may call the write endpoints, and the TLS settings of the server and of peer requests;
    /// swappable, so a reload of the configuration takes effect without a restart.
    pub security: SecurityHandle,
    /// Switchover polling and probe timeouts.
    pub timing: WriteTiming,
    /// Live WAL positions for the status answers; `None` uses the snapshot's.
    pub live_wal: Option<Arc<dyn crate::live::LiveWal>>,
}

impl ApiContext {
    /// A context over `snapshot` with the given postmaster probe, no backend, open access, plain
    /// HTTP and Patroni's timings.
    pub fn new(
        snapshot: watch::Receiver<NodeSnapshot>,
        postmaster_alive: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        ApiContext {
            snapshot,
            postmaster_alive: Arc::new(postmaster_alive),
            backend: None,
            probe: Arc::new(HttpProbe::new(None)),
            security: SecurityHandle::new(Security::open()),
            timing: WriteTiming::default(),
            live_wal: None,
        }
    }

    /// Status answers carry the WAL positions of the moment (see [`crate::live`]).
    pub fn with_live_wal(mut self, live: Arc<dyn crate::live::LiveWal>) -> Self {
        self.live_wal = Some(live);
        self
    }

    /// Enables the write endpoints.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Sets the access policy and TLS settings; also makes the member probe use the peer TLS
    /// settings in force (call [`ApiContext::with_probe`] afterwards to replace the probe).
    /// [`ApiContext::security`] replaces them later.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = SecurityHandle::new(security);
        self.probe = Arc::new(HttpProbe::following(self.security.clone()));
        self
    }

    /// Replaces the member probe (tests use a scripted one).
    pub fn with_probe(mut self, probe: Arc<dyn MemberProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// Replaces the timings (tests shorten the switchover poll).
    pub fn with_timing(mut self, timing: WriteTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Copies the current snapshot out of the channel and probes the postmaster.
    /// The channel's read lock is held only while cloning (cheap: the cluster is an `Arc`).
    pub fn current(&self) -> (NodeSnapshot, bool) {
        let snap = self.snapshot.borrow().clone();
        let alive = (self.postmaster_alive)();
        (snap, alive)
    }
}

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext")
            .field("snapshot", &*self.snapshot.borrow())
            .field("backend", &self.backend.is_some())
            .field("security", &self.security)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}
