//! The watch-fed copy of one cluster's keys: what lets a quiet HA cycle cost etcd one lease
//! keep-alive instead of a range read, a member-key write and a lock transaction.
//!
//! Invariants:
//! * the copy is complete up to `revision`: it starts from a full (linearizable) read at that
//!   revision, and takes in only events newer than it, in the order the watch delivers them;
//!   any full read at a later revision replaces it, so every such read is also a resync;
//! * it is usable only while its watch stream is established (`live`): a stream that ends makes
//!   it unusable until the watcher has read everything again and re-created the stream;
//! * "up to date" is judged against the caller's keep-alive of the same cycle, which only a
//!   member in touch with etcd's raft leader can answer. The copy counts as current when it has
//!   caught up with the revision that member had reached; or when its stream is on that very
//!   member and proved alive within [`CONFIRMED_WITHIN`] (that member is in the majority now, and
//!   its stream delivers what it applies, a few milliseconds behind at most). Otherwise the
//!   watcher is asked for a progress notification, and the copy is current once that shows the
//!   revision. A stream on a member cut off from the rest, which delivers nothing and whose
//!   progress answers stay behind, is never taken for an up-to-date one: that member cannot
//!   answer a keep-alive, so the keep-alive went elsewhere.
//!
//! * the copy shows this client's own writes: it is current only once it has reached the
//!   revision etcd gave the last of them (a failed compare-and-swap counts, with the revision it
//!   was judged at), however it otherwise counts as current. A leader that just wrote the `sync`
//!   key must never decide on a copy from before that write: it would take a key that names
//!   another standby for one that does not, and change `synchronous_standby_names` under it.
//!
//! Whether a decision may rest on the copy at all is the core's rule
//! ([`rampart_core::cached_view`]); this module only says whether the copy is current.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Event, EventType};
use rampart_core::keys::ClusterPrefix;
use rampart_core::model::RawKv;
use rampart_core::Cluster;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::lease::KeptAlive;

/// How recently a stream must have proved alive (created, delivered an event or answered a
/// progress request) for the copy to count as current without asking, when the stream is on the
/// member that answered the cycle's keep-alive. The agent's watcher probes a quiet stream at
/// least this often by itself (see `watch`), so a quiet cluster's cycles never have to ask.
pub(crate) const CONFIRMED_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Copy {
    kvs: BTreeMap<String, RawKv>,
    /// Every change up to this revision is in `kvs`.
    revision: i64,
    /// The endpoint of the established watch stream feeding the copy; `None` while there is none.
    stream: Option<usize>,
    /// When the stream last proved alive.
    confirmed_at: Option<Instant>,
    /// When the copy was last replaced by a full read.
    read_at: Option<Instant>,
    /// The revision of this client's last write (or compare) that etcd answered: the copy is
    /// not current before it reaches it.
    own_written: i64,
}

/// The copy, shared by the watcher (which feeds it) and the callers that read it.
#[derive(Debug)]
pub(crate) struct ClusterView {
    copy: Mutex<Copy>,
    /// The copy's revision, for callers waiting for it to reach one.
    caught_up: watch::Sender<i64>,
    /// Asks the watcher for a progress notification.
    progress_wanted: Notify,
}

impl Default for ClusterView {
    fn default() -> Self {
        ClusterView { copy: Mutex::default(), caught_up: watch::channel(0).0, progress_wanted: Notify::new() }
    }
}

impl ClusterView {
    /// Replaces the copy with a full read at `revision`, unless the copy is already newer. With
    /// `restart` (the watcher starting a stream), it is replaced whatever its revision: the store
    /// may have been rebuilt with fewer revisions, and the copy is not live until
    /// [`ClusterView::stream_established`].
    pub(crate) fn reseed(&self, kvs: &[RawKv], revision: i64, restart: bool) {
        let mut copy = self.lock();
        if !restart && revision < copy.revision {
            return;
        }
        copy.kvs = kvs.iter().map(|kv| (kv.key.clone(), kv.clone())).collect();
        copy.revision = revision;
        copy.read_at = Some(Instant::now());
        // A linearizable read shows every write that completed before it; a store rebuilt with
        // fewer revisions would otherwise keep the copy waiting for a revision it never reaches.
        copy.own_written = copy.own_written.min(revision);
        if restart {
            copy.stream = None;
        }
        drop(copy);
        self.caught_up.send_replace(revision);
    }

    /// etcd answered a write (or a compare) of this client at `revision`.
    pub(crate) fn wrote(&self, revision: i64) {
        let mut copy = self.lock();
        copy.own_written = copy.own_written.max(revision);
    }

    /// The watcher's stream from the reseed revision on is established on `endpoint`.
    pub(crate) fn stream_established(&self, endpoint: usize) {
        let mut copy = self.lock();
        copy.stream = Some(endpoint);
        copy.confirmed_at = Some(Instant::now());
    }

    /// The watcher's stream ended: the copy stops being usable.
    pub(crate) fn stream_ended(&self) {
        self.lock().stream = None;
    }

    /// Takes in the events of one watch response.
    pub(crate) fn apply(&self, events: &[Event]) {
        let mut copy = self.lock();
        copy.confirmed_at = Some(Instant::now());
        let base = copy.revision;
        let mut top = base;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            // Events at or below the base are already in the copy (a full read overtook them);
            // events of one transaction share a revision, hence the comparison with the base.
            if revision <= base {
                continue;
            }
            top = top.max(revision);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    let value = String::from_utf8_lossy(kv.value()).into_owned();
                    copy.kvs.insert(key.clone(), RawKv { key, value, lease: kv.lease(), mod_revision: revision });
                }
                EventType::Delete => {
                    copy.kvs.remove(&key);
                }
            }
        }
        copy.revision = top;
        drop(copy);
        self.announce(top);
    }

    /// A progress notification: every event up to `revision` was delivered.
    pub(crate) fn progress(&self, revision: i64) {
        let mut copy = self.lock();
        copy.confirmed_at = Some(Instant::now());
        copy.revision = copy.revision.max(revision);
        let now = copy.revision;
        drop(copy);
        self.announce(now);
    }

    /// Tells the callers waiting in [`ClusterView::current`] that the copy reached `revision`.
    fn announce(&self, revision: i64) {
        self.caught_up.send_if_modified(|r| {
            let moved = revision > *r;
            *r = (*r).max(revision);
            moved
        });
    }

    /// Resolves when someone asked for a progress notification.
    pub(crate) async fn progress_wanted(&self) {
        self.progress_wanted.notified().await;
    }

    /// The cluster as the copy shows it, if the stream is live, the copy was fully read within
    /// `max_age`, and it is current as of `kept`, a keep-alive of the caller's (see the module
    /// header): asking the watcher for a progress notification and waiting up to `wait` for it
    /// if need be.
    pub(crate) async fn current(
        &self,
        prefix: &ClusterPrefix,
        kept: &KeptAlive,
        max_age: Duration,
        wait: Duration,
    ) -> Option<Cluster> {
        let needed = {
            let copy = self.lock();
            let stream = copy.stream?;
            if copy.read_at.is_none_or(|at| at.elapsed() > max_age) {
                return None;
            }
            let caught_up = kept.revision.is_some_and(|r| copy.revision >= r);
            let same_member_alive =
                stream == kept.endpoint && copy.confirmed_at.is_some_and(|at| at.elapsed() < CONFIRMED_WITHIN);
            let mut needed = copy.own_written;
            if !(caught_up || same_member_alive) {
                // Without the revision the keep-alive saw, there is nothing to wait for.
                needed = needed.max(kept.revision?);
            }
            (copy.revision < needed).then_some(needed)
        };
        if let Some(revision) = needed {
            let mut rx = self.caught_up.subscribe();
            self.progress_wanted.notify_one();
            tokio::time::timeout(wait, rx.wait_for(|r| *r >= revision)).await.ok()?.ok()?;
        }
        let copy = self.lock();
        // Checked again: the stream may have ended while we waited.
        copy.stream?;
        let kvs: Vec<RawKv> = copy.kvs.values().cloned().collect();
        Some(Cluster::from_kvs(prefix, &kvs, copy.revision))
    }

    /// One key as the copy shows it, while the stream is live and the copy shows our own last
    /// write: `Ok(None)` if the key is absent, `Err(())` if the copy cannot tell.
    pub(crate) fn entry(&self, key: &str) -> Result<Option<RawKv>, ()> {
        let copy = self.lock();
        if copy.stream.is_none() || copy.revision < copy.own_written {
            return Err(());
        }
        Ok(copy.kvs.get(key).cloned())
    }

    /// Whether the copy can tell that `key` holds `value` on `lease` (false when it cannot tell).
    pub(crate) fn shows(&self, key: &str, value: &str, lease: i64) -> bool {
        self.entry(key).ok().flatten().is_some_and(|kv| kv.value == value && kv.lease == lease)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Copy> {
        // Plain data, replaced or updated in whole steps: a panic elsewhere cannot leave it torn.
        self.copy.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, revision: i64) -> RawKv {
        RawKv { key: key.into(), value: value.into(), lease: 0, mod_revision: revision }
    }

    fn prefix() -> ClusterPrefix {
        ClusterPrefix::new("/service/", "demo")
    }

    /// A keep-alive answered by endpoint `endpoint` at store revision `revision`.
    fn kept(endpoint: usize, revision: Option<i64>) -> KeptAlive {
        KeptAlive { lease: 1, sent: Instant::now(), revision, endpoint }
    }

    /// A watcher that answers the next progress request with a notification at `revision`.
    fn answer_progress(view: &std::sync::Arc<ClusterView>, revision: i64) -> tokio::task::JoinHandle<()> {
        let view = view.clone();
        tokio::spawn(async move {
            view.progress_wanted().await;
            view.progress(revision);
        })
    }

    const QUICK: Duration = Duration::from_millis(20);
    const AGE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn not_usable_until_the_stream_is_established_nor_after_it_ended() {
        let view = ClusterView::default();
        let p = prefix();
        view.reseed(&[kv("/service/demo/leader", "n1", 5)], 7, true);
        assert!(view.current(&p, &kept(0, Some(7)), AGE, QUICK).await.is_none(), "stream not established yet");
        view.stream_established(0);
        let c = view.current(&p, &kept(0, Some(7)), AGE, QUICK).await.expect("live and caught up");
        assert_eq!(c.leader.map(|l| l.name).as_deref(), Some("n1"));
        view.stream_ended();
        assert!(view.current(&p, &kept(0, Some(7)), AGE, QUICK).await.is_none());
        assert!(view.entry("/service/demo/leader").is_err());
    }

    #[tokio::test]
    async fn a_stream_on_the_member_that_answered_the_keep_alive_needs_no_question() {
        let view = ClusterView::default();
        view.reseed(&[], 7, true);
        view.stream_established(1);
        // The store moved on (other clusters write), the member is the same: no progress asked.
        assert!(view.current(&prefix(), &kept(1, Some(90)), AGE, QUICK).await.is_some());
        assert!(view.current(&prefix(), &kept(1, None), AGE, QUICK).await.is_some());
    }

    #[tokio::test]
    async fn a_stream_on_another_member_must_show_the_revision_the_keep_alive_saw() {
        let view = std::sync::Arc::new(ClusterView::default());
        let p = prefix();
        view.reseed(&[], 7, true);
        view.stream_established(0);
        // The keep-alive went to member 1: member 0 may be the one cut off. Nobody answers.
        assert!(view.current(&p, &kept(1, Some(9)), AGE, QUICK).await.is_none());
        assert!(view.current(&p, &kept(1, None), AGE, QUICK).await.is_none(), "nothing to compare with");
        // A watcher that answers the request with a notification at revision 9.
        let watcher = answer_progress(&view, 9);
        assert!(view.current(&p, &kept(1, Some(9)), AGE, Duration::from_secs(5)).await.is_some());
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn a_copy_from_before_our_own_write_is_not_current_even_on_the_same_member() {
        let view = std::sync::Arc::new(ClusterView::default());
        let p = prefix();
        view.reseed(&[], 7, true);
        view.stream_established(0);
        // We wrote at revision 8; the event is still on its way down the stream.
        view.wrote(8);
        assert!(view.current(&p, &kept(0, Some(7)), AGE, QUICK).await.is_none(), "the copy predates our write");
        assert_eq!(view.entry("/service/demo/leader"), Err(()), "nor can it tell one key");
        // Once the stream shows revision 8 (here by a progress notification), it is current again.
        let watcher = answer_progress(&view, 8);
        assert!(view.current(&p, &kept(0, Some(7)), AGE, Duration::from_secs(5)).await.is_some());
        watcher.await.unwrap();
        // A full read at a lower revision (a rebuilt store) does not leave it waiting for ever.
        view.wrote(50);
        view.reseed(&[], 9, true);
        view.stream_established(0);
        assert!(view.current(&p, &kept(0, Some(9)), AGE, QUICK).await.is_some());
    }

    #[tokio::test]
    async fn a_copy_not_read_in_full_for_too_long_is_not_used() {
        let view = ClusterView::default();
        view.reseed(&[], 7, true);
        view.stream_established(0);
        assert!(view.current(&prefix(), &kept(0, Some(7)), Duration::ZERO, QUICK).await.is_none());
    }

    #[test]
    fn a_full_read_replaces_an_older_copy_only() {
        let view = ClusterView::default();
        view.reseed(&[kv("/k", "old", 3)], 5, true);
        view.stream_established(0);
        view.reseed(&[kv("/k", "older", 2)], 4, false);
        assert_eq!(view.entry("/k").unwrap().unwrap().value, "old");
        view.reseed(&[kv("/k", "new", 6)], 6, false);
        assert_eq!(view.entry("/k").unwrap().unwrap().value, "new");
        view.reseed(&[], 2, true);
        assert_eq!(view.entry("/k"), Err(()), "a restart makes it unusable until established");
        view.stream_established(0);
        assert_eq!(view.entry("/k"), Ok(None), "a rebuilt store replaces the copy whatever its revision");
    }
}
