//! The watcher task: wakes the HA loop when the cluster changes in a way that matters.
//!
//! Invariants:
//! * the watch is only a wake-up hint, never a source of truth: it carries no data to the loop,
//!   which always re-reads the cluster. Missing a wake-up costs latency, not correctness;
//! * it survives anything: on errors it re-watches from the last revision seen + 1 (so no event in
//!   between is lost) after a backoff; after a compaction, or when the store's revision went
//!   backwards (etcd rebuilt), it starts fresh and wakes the loop once, since events were lost;
//! * a stream that silently stops delivering is detected: after a quiet spell the task asks etcd
//!   for a progress notification, and re-creates the watch if that goes unanswered. The client's
//!   HTTP/2 keep-alive pings close dead connections underneath as well.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Event, EventType, WatchOptions, WatchResponse, WatchStream};
use rampart_core::keys::{self, ClusterPrefix};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::backoff::Backoff;
use crate::error::Fault;
use crate::etcd::EtcdDcs;

/// Which events wake the loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WakeOn {
    /// Changes that can alter a decision: any key created or deleted (a member joining or
    /// expiring, the leader key appearing or vanishing), and value changes of every key except
    /// member keys and `status`. Those two are rewritten by every node on every cycle; waking on
    /// them would make each cycle trigger the next one on every node (and a node's own writes
    /// would wake itself). Re-puts of an unchanged value, such as a leader renewal, never wake.
    /// A proxy's report (`proxies/<id>`) wakes when it appears, changes or goes away, so a leader
    /// waiting for the proxies to drain looks again at once; its lease keep-alives never wake.
    #[default]
    Relevant,
    /// Every event under the prefix.
    AnyEvent,
}

/// Timing of the watcher, derived from the operation timeout.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Quiet time after which we ask etcd whether the stream is still alive.
    idle_probe: Duration,
    /// How long the answer to that question (or to a watch creation) may take.
    answer_within: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl Timing {
    fn from_op_timeout(op: Duration) -> Timing {
        Timing {
            idle_probe: (op * 2).clamp(Duration::from_secs(1), Duration::from_secs(10)),
            answer_within: op.max(Duration::from_millis(500)),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Why one watch stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// Our start revision was compacted away: events were lost, start over.
    Compacted,
    /// The store's revision is behind ours: it was rebuilt, start over.
    RevisionWentBack,
    /// Transport error, cancellation or a stream that stopped answering.
    Failed(String),
}

impl EtcdDcs {
    /// Starts the watcher with the [`WakeOn::Relevant`] filter. It runs until the handle is
    /// aborted; it calls `notify.notify_one()` on relevant changes, and once at (re)start when
    /// events may have been missed.
    pub fn spawn_watcher(&self, notify: Arc<Notify>) -> JoinHandle<()> {
        self.spawn_watcher_with(notify, WakeOn::Relevant)
    }

    /// Starts the watcher with an explicit filter.
    pub fn spawn_watcher_with(&self, notify: Arc<Notify>, wake_on: WakeOn) -> JoinHandle<()> {
        let watcher = Watcher {
            dcs: self.clone(),
            notify,
            wake_on,
            timing: Timing::from_op_timeout(self.inner.conn.op_timeout()),
            next_revision: None,
            endpoint: None,
        };
        tokio::spawn(watcher.run())
    }
}

struct Watcher {
    dcs: EtcdDcs,
    notify: Arc<Notify>,
    wake_on: WakeOn,
    timing: Timing,
    /// First revision not yet seen; `None` until a watch was established (or after a reset).
    next_revision: Option<i64>,
    /// Endpoint of the current stream, to move away from it when the stream fails.
    endpoint: Option<usize>,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.timing.backoff_min, self.timing.backoff_max);
        let mut failures = 0u32;
        loop {
            let end = self.watch_once(&mut backoff, &mut failures).await;
            if let Some(index) = self.endpoint.take() {
                // Whatever went wrong, the next attempt starts on another endpoint, if any.
                self.dcs.inner.conn.demote(index);
            }
            match end {
                StreamEnd::Compacted | StreamEnd::RevisionWentBack => {
                    tracing::info!(reason = ?end, "etcd watch lost its position; starting afresh");
                    self.next_revision = None;
                }
                StreamEnd::Failed(why) => {
                    failures += 1;
                    // One warning per outage, not one per retry.
                    if failures == 1 {
                        tracing::warn!(endpoints = %self.dcs.inner.conn.endpoints(), %why, "etcd watch failed; re-watching");
                    } else {
                        tracing::debug!(failures, %why, "etcd watch still failing");
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Creates one watch stream and follows it until it ends.
    async fn watch_once(&mut self, backoff: &mut Backoff, failures: &mut u32) -> StreamEnd {
        let mut stream = match self.create().await {
            Ok(stream) => stream,
            Err(end) => return end,
        };
        if *failures > 0 {
            tracing::info!(failures, "etcd watch re-established");
        }
        *failures = 0;
        backoff.reset();
        let mut probing = false;
        loop {
            let wait = if probing { self.timing.answer_within } else { self.timing.idle_probe };
            let response = match timeout(wait, stream.message()).await {
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => return StreamEnd::Failed("stream closed by server".into()),
                Ok(Err(e)) => return StreamEnd::Failed(Fault::from(e).to_string()),
                Err(_quiet) if probing => return StreamEnd::Failed("no answer to a progress request".into()),
                Err(_quiet) => {
                    // Progress requests exist since etcd 3.4; the answer is a response without
                    // events that also tells us the revision we are synced to.
                    if let Err(e) = stream.request_progress().await {
                        return StreamEnd::Failed(format!("cannot request progress: {e}"));
                    }
                    probing = true;
                    continue;
                }
            };
            probing = false;
            if let Some(end) = self.absorb(&response) {
                return end;
            }
        }
    }

    /// Opens the stream and waits for etcd to confirm the watch.
    async fn create(&mut self) -> Result<WatchStream, StreamEnd> {
        let conn = &self.dcs.inner.conn;
        let prefix = self.dcs.inner.prefix.as_str().to_string();
        let mut options = WatchOptions::new().with_prefix().with_prev_key().with_progress_notify();
        if let Some(revision) = self.next_revision {
            options = options.with_start_revision(revision);
        }
        let deadline = Instant::now() + self.timing.answer_within;
        let (mut stream, index) = conn
            .call_on(deadline, |mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch(prefix, Some(options)).await }
            })
            .await
            .map_err(|f| StreamEnd::Failed(format!("cannot create watch: {f}")))?;
        self.endpoint = Some(index);
        let created = match timeout(self.timing.answer_within, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => return Err(StreamEnd::Failed("stream closed before the watch was created".into())),
            Ok(Err(e)) => return Err(StreamEnd::Failed(Fault::from(e).to_string())),
            Err(_) => return Err(StreamEnd::Failed("watch creation not confirmed in time".into())),
        };
        if let Some(end) = cancellation(&created) {
            return Err(end);
        }
        let store_revision = created.header().map(|h| h.revision()).unwrap_or(0);
        match self.next_revision {
            None => {
                // Fresh start: we were blind until now, so the loop must look once.
                self.next_revision = Some(store_revision + 1);
                self.notify.notify_one();
            }
            Some(next) if store_revision + 1 < next => return Err(StreamEnd::RevisionWentBack),
            Some(_) => {}
        }
        // The confirmation may already carry events (fragments of a catch-up).
        if let Some(end) = self.absorb(&created) {
            return Err(end);
        }
        Ok(stream)
    }

    /// Takes in one response: advances the revision, wakes the loop if warranted.
    fn absorb(&mut self, response: &WatchResponse) -> Option<StreamEnd> {
        if let Some(end) = cancellation(response) {
            return Some(end);
        }
        let events = response.events();
        if events.is_empty() {
            // A progress notification: every event up to the header revision was delivered.
            if !response.created() {
                if let Some(header) = response.header() {
                    self.advance(header.revision() + 1);
                }
            }
            return None;
        }
        let mut wake = false;
        for event in events {
            if let Some(kv) = event.kv() {
                self.advance(kv.mod_revision() + 1);
            }
            wake |= self.wakes(event);
        }
        if wake {
            self.notify.notify_one();
        }
        None
    }

    fn advance(&mut self, next: i64) {
        self.next_revision = Some(self.next_revision.map_or(next, |n| n.max(next)));
    }

    fn wakes(&self, event: &Event) -> bool {
        match self.wake_on {
            WakeOn::AnyEvent => true,
            WakeOn::Relevant => is_relevant(&self.dcs.inner.prefix, event),
        }
    }
}

/// Whether a response ends the stream, and why.
fn cancellation(response: &WatchResponse) -> Option<StreamEnd> {
    if response.compact_revision() > 0 {
        return Some(StreamEnd::Compacted);
    }
    if response.canceled() {
        let reason = response.cancel_reason();
        return Some(StreamEnd::Failed(format!(
            "watch canceled by etcd: {}",
            if reason.is_empty() { "no reason" } else { reason }
        )));
    }
    None
}

/// The [`WakeOn::Relevant`] rule.
fn is_relevant(prefix: &ClusterPrefix, event: &Event) -> bool {
    let Some(kv) = event.kv() else { return true };
    // etcd has had exactly two event types since v3.0.
    if event.event_type() != EventType::Put {
        return true;
    }
    let Some(prev) = event.prev_kv() else {
        return true;
    }; // created (or history unknown)
    if prev.value() == kv.value() {
        return false; // lease or no-op rewrite, e.g. a leader renewal
    }
    let key = String::from_utf8_lossy(kv.key());
    match prefix.relative(&key) {
        Some(rel) => rel != keys::STATUS && !rel.starts_with(keys::MEMBERS),
        None => true,
    }
}
