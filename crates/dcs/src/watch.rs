//! The watcher task: feeds the watch-fed copy of the cluster (`view`) and wakes the HA loop
//! when the cluster changes in a way that matters.
//!
//! Invariants:
//! * every stream starts from a full linearizable read: the copy is replaced by it and the
//!   stream watches from the next revision, so no event is lost in between and a stream that
//!   broke never leaves a gap in the copy (the resync on every break the copy relies on);
//! * it survives anything: on errors it reads and watches again after a backoff, on another
//!   endpoint if there is one; the copy is unusable from the moment a stream ends until the next
//!   one is established, and the loop is woken once at each (re)start, since it was blind;
//! * a stream that silently stops delivering is detected: when a cycle needs the copy confirmed
//!   (or, for a proxy's watcher, after a quiet spell), the task asks etcd for a progress
//!   notification, and re-creates the watch if that goes unanswered. The client's HTTP/2
//!   keep-alive pings close dead connections underneath as well;
//! * the stream follows the endpoint every other request goes to: when that changes (an
//!   endpoint failed a request), the stream moves too, so a copy fed by a member cut off from the
//!   others is soon replaced by one fed from the majority;
//! * once a stream is established, and every few minutes after, it asks etcd for its member list
//!   and adds the members not configured to the endpoints the client may use.

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
    /// member keys and `status`. Those two change with every write load on the primary; waking
    /// on them would make each cycle trigger the next one on every node (and a node's own writes
    /// would wake itself). Re-puts of an unchanged value, such as a leader moved to a new lease,
    /// never wake. A proxy's report (`proxies/<id>`) wakes when it appears, changes or goes
    /// away, so a leader waiting for the proxies to drain looks again at once.
    #[default]
    Relevant,
    /// Every event under the prefix.
    AnyEvent,
}

/// When the watcher asks etcd whether its stream is still delivering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probing {
    /// After a quiet spell (a proxy, which follows the leader by the watch alone).
    WhenQuiet,
    /// When a cycle asks for its copy to be confirmed (the agent's), and after a long quiet
    /// spell, so that the copy stays confirmed: on an idle cluster a probe every few seconds
    /// would cost etcd more than the cycles themselves.
    WhenAsked,
}

/// Quiet time after which a [`Probing::WhenAsked`] watcher probes anyway: well within
/// [`crate::view::CONFIRMED_WITHIN`], so that a quiet cluster's cycles never have to ask.
const BACKSTOP_PROBE: Duration = Duration::from_secs(90);
/// How often the watcher asks etcd for its member list (as Patroni's etcd3 client refreshes its
/// cache of machines); after a failed attempt it tries again sooner.
const MEMBER_LIST_EVERY: Duration = Duration::from_secs(300);
const MEMBER_LIST_RETRY: Duration = Duration::from_secs(30);

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
    fn new(op: Duration, probing: Probing) -> Timing {
        Timing {
            idle_probe: match probing {
                Probing::WhenQuiet => (op * 2).clamp(Duration::from_secs(1), Duration::from_secs(10)),
                Probing::WhenAsked => BACKSTOP_PROBE,
            },
            answer_within: op.max(Duration::from_millis(500)),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Why one watch stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// Our start revision was compacted away before the stream caught up: start over.
    Compacted,
    /// Requests go to another endpoint now: the stream follows them.
    Moved,
    /// Transport error, cancellation or a stream that stopped answering.
    Failed(String),
}

impl EtcdDcs {
    /// Starts the agent's watcher: the [`WakeOn::Relevant`] filter, and a stream confirmed when
    /// a cycle asks for its copy ([`crate::Dcs::cached_cluster`]). It runs until the handle is
    /// aborted; it calls `notify.notify_one()` on relevant changes, and once at each (re)start.
    pub fn spawn_watcher(&self, notify: Arc<Notify>) -> JoinHandle<()> {
        self.spawn(notify, WakeOn::Relevant, Probing::WhenAsked)
    }

    /// Starts a watcher with an explicit filter, for a caller that follows the cluster by the
    /// wake-ups alone (a proxy): the stream is probed whenever it has been quiet for a while.
    pub fn spawn_watcher_with(&self, notify: Arc<Notify>, wake_on: WakeOn) -> JoinHandle<()> {
        self.spawn(notify, wake_on, Probing::WhenQuiet)
    }

    fn spawn(&self, notify: Arc<Notify>, wake_on: WakeOn, probing: Probing) -> JoinHandle<()> {
        let watcher = Watcher {
            dcs: self.clone(),
            notify,
            wake_on,
            timing: Timing::new(self.inner.conn.op_timeout(), probing),
            endpoint: None,
            next_learn: Instant::now(),
        };
        tokio::spawn(watcher.run())
    }
}

struct Watcher {
    dcs: EtcdDcs,
    notify: Arc<Notify>,
    wake_on: WakeOn,
    timing: Timing,
    /// Endpoint of the current stream, to move away from it when the stream fails.
    endpoint: Option<usize>,
    /// When to ask etcd for its member list next.
    next_learn: Instant,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = Backoff::new(self.timing.backoff_min, self.timing.backoff_max);
        let mut failures = 0u32;
        loop {
            let end = self.watch_once(&mut backoff, &mut failures).await;
            self.dcs.inner.view.stream_ended();
            let endpoint = self.endpoint.take();
            match end {
                StreamEnd::Moved => {
                    tracing::debug!("etcd watch follows the requests to another endpoint");
                    continue;
                }
                StreamEnd::Compacted => tracing::info!("etcd watch lost its position; starting afresh"),
                StreamEnd::Failed(why) => {
                    if let Some(index) = endpoint {
                        // The next attempt starts on another endpoint, if any.
                        self.dcs.inner.conn.demote(index);
                    }
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
        let dcs = self.dcs.clone();
        let view = &dcs.inner.view;
        let mut probing = false;
        loop {
            let wait = if probing { self.timing.answer_within } else { self.timing.idle_probe };
            let next = tokio::select! {
                biased;
                message = timeout(wait, stream.message()) => Some(message),
                () = view.progress_wanted(), if !probing => None,
                () = tokio::time::sleep_until(self.next_learn) => {
                    self.learn_members().await;
                    continue;
                }
            };
            let response = match next {
                Some(Ok(Ok(Some(response)))) => response,
                Some(Ok(Ok(None))) => return StreamEnd::Failed("stream closed by server".into()),
                Some(Ok(Err(e))) => return StreamEnd::Failed(Fault::from(e).to_string()),
                Some(Err(_quiet)) if probing => return StreamEnd::Failed("no answer to a progress request".into()),
                // Quiet for a while, or a cycle wants the copy confirmed.
                Some(Err(_)) | None => {
                    if self.endpoint != Some(self.dcs.inner.conn.preferred()) {
                        return StreamEnd::Moved;
                    }
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

    /// Reads the cluster, replaces the copy with it, then opens the stream from the next
    /// revision and waits for etcd to confirm the watch.
    async fn create(&mut self) -> Result<WatchStream, StreamEnd> {
        let deadline = Instant::now() + self.timing.answer_within;
        let (kvs, revision) = self
            .dcs
            .read_keys("watch_resync", deadline)
            .await
            .map_err(|e| StreamEnd::Failed(format!("cannot read the cluster: {e}")))?;
        let dcs = self.dcs.clone();
        let view = &dcs.inner.view;
        view.reseed(&kvs, revision, true);
        let conn = &dcs.inner.conn;
        let prefix = dcs.inner.prefix.as_str().to_string();
        let options =
            WatchOptions::new().with_prefix().with_prev_key().with_progress_notify().with_start_revision(revision + 1);
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
        view.stream_established(index);
        // We were blind until now: the loop looks once.
        self.notify.notify_one();
        // The confirmation may already carry events.
        if let Some(end) = self.absorb(&created) {
            return Err(end);
        }
        Ok(stream)
    }

    /// Asks etcd for its members and adds the ones not known yet to the client's endpoints.
    async fn learn_members(&mut self) {
        let deadline = Instant::now() + self.timing.answer_within;
        self.next_learn = match self.dcs.inner.conn.learn_members(deadline).await {
            Ok(added) => {
                for url in added {
                    tracing::info!(endpoint = %crate::error::display_endpoint(&url), "etcd member learned from the member list");
                }
                Instant::now() + MEMBER_LIST_EVERY
            }
            Err(fault) => {
                tracing::debug!(%fault, "cannot read etcd's member list");
                Instant::now() + MEMBER_LIST_RETRY
            }
        };
    }

    /// Takes in one response: feeds the copy, wakes the loop if warranted.
    fn absorb(&self, response: &WatchResponse) -> Option<StreamEnd> {
        if let Some(end) = cancellation(response) {
            return Some(end);
        }
        let view = &self.dcs.inner.view;
        let events = response.events();
        if events.is_empty() {
            // A progress notification: every event up to the header revision was delivered.
            if !response.created() {
                if let Some(header) = response.header() {
                    view.progress(header.revision());
                }
            }
            return None;
        }
        view.apply(events);
        if events.iter().any(|e| self.wakes(e)) {
            self.notify.notify_one();
        }
        None
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
