//! Statement texts already classified, by [`super::shape::key`], so that a repeated statement
//! (the same text, or the same text with other constants) is not parsed again; with the counts
//! the admin port and the benchmark print (hits, misses, time spent parsing).
//!
//! Invariant: the cache holds at most its capacity; when full, an arbitrary entry makes room
//! (a hash map's first entry: no bookkeeping per hit, and a workload whose statements fit stays
//! cached).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::classify::{classify, Facts};
use super::shape;

/// Entries kept by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Classified statements, shared by every session of the proxy.
#[derive(Debug)]
pub struct StatementCache {
    entries: Mutex<HashMap<Box<str>, Arc<Facts>>>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    parse_ns: AtomicU64,
}

/// The cache's counts since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Statements found classified.
    pub hits: u64,
    /// Statements parsed.
    pub misses: u64,
    /// Nanoseconds spent parsing and classifying the misses.
    pub parse_ns: u64,
    /// Entries held now.
    pub entries: usize,
}

impl Default for StatementCache {
    fn default() -> Self {
        StatementCache::new(DEFAULT_CAPACITY)
    }
}

impl StatementCache {
    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> StatementCache {
        StatementCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            parse_ns: AtomicU64::new(0),
        }
    }

    /// What `text` is, from the cache or parsed now.
    pub fn facts(&self, text: &str) -> Arc<Facts> {
        let key = shape::key(text);
        if let Some(f) = self.lock().get(key.as_ref()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return f.clone();
        }
        // Parsed outside the lock: another session may parse the same text meanwhile, which
        // costs a parse, never a wrong answer.
        let began = Instant::now();
        let facts = Arc::new(classify(text));
        self.parse_ns.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(key.into_owned().into_boxed_str(), facts.clone());
        facts
    }

    /// The counts so far.
    pub fn figures(&self) -> CacheFigures {
        CacheFigures {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            parse_ns: self.parse_ns.load(Ordering::Relaxed),
            entries: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Facts>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::classify::Class;

    #[test]
    fn a_statement_differing_only_in_constants_is_parsed_once() {
        let cache = StatementCache::new(10);
        for aid in 1..=100 {
            let f = cache.facts(&format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"));
            assert_eq!(f.class, Class::Read);
        }
        let fig = cache.figures();
        assert_eq!((fig.hits, fig.misses, fig.entries), (99, 1, 1));
        assert!(fig.parse_ns > 0);
    }

    #[test]
    fn a_full_cache_makes_room_and_stays_bounded() {
        let cache = StatementCache::new(3);
        for t in ["t1", "t2", "t3", "t4", "t5"] {
            cache.facts(&format!("SELECT * FROM {t}"));
        }
        assert_eq!(cache.figures().entries, 3);
        assert_eq!(cache.facts("SELECT * FROM t5").class, Class::Read, "the newest stays");
        assert_eq!(cache.figures().hits, 1);
    }
}
